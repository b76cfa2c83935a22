/**
 * The host file lent to an image opened inside amend: everything goes to the file, except
 * close, which flushes and leaves the file open for the header changes that follow.
 */
import { ForwardingDriver } from '../../../block/forwarding-driver.js';

export class BorrowedFile extends ForwardingDriver {
  override close(): Promise<void> {
    return this.child.flush();
  }
}
