/** NBD URIs as QEMU and libnbd read them, and the names QEMU shows for them. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { isNbdUri, parseNbdUri } from '../../src/remote/nbd/uri.js';

describe('NBD URIs', () => {
  it('tell URIs from file names', () => {
    for (const uri of [
      'nbd://h/x',
      'NBD://h',
      'nbd+unix:///?socket=/s',
      'nbds://h',
      'nbds+unix:///e?socket=s',
      'nbd+tcp://h',
    ]) {
      assert.equal(isNbdUri(uri), true, uri);
    }
    for (const file of ['disk.img', 'nbd:host:10809', '/tmp/nbd://x', 'http://h/x', 'nbdx://h']) {
      assert.equal(isNbdUri(file), false, file);
    }
  });

  it('read TCP URIs with the default port, IPv6 hosts and percent-encoded export names', () => {
    const a = parseNbdUri('nbd://127.0.0.1');
    assert.deepEqual(
      [a.transport, a.host, a.port, a.exportName, a.displayName],
      ['tcp', '127.0.0.1', 10809, '', 'nbd://127.0.0.1:10809'],
    );
    const b = parseNbdUri('nbd://example.com:10899/my%20disk/part');
    assert.deepEqual(
      [b.host, b.port, b.exportName, b.displayName],
      ['example.com', 10899, 'my disk/part', 'nbd://example.com:10899/my disk/part'],
    );
    const c = parseNbdUri('nbd://[::1]:1234/x');
    assert.deepEqual([c.host, c.port, c.displayName], ['::1', 1234, 'nbd://[::1]:1234/x']);
    assert.equal(parseNbdUri('nbd://h/').exportName, '');
  });

  it('read Unix socket URIs, keeping a + in the socket path', () => {
    const u = parseNbdUri('nbd+unix:///exp?socket=/run/a+b.sock');
    assert.deepEqual(
      [u.transport, u.socket, u.exportName, u.displayName],
      ['unix', '/run/a+b.sock', 'exp', 'nbd+unix:///exp?socket=/run/a+b.sock'],
    );
    assert.equal(parseNbdUri('nbd+unix:///?socket=/s').displayName, 'nbd+unix://?socket=/s');
  });

  it('read TLS URIs with libnbd’s query keys', () => {
    const t = parseNbdUri('nbds://h/e?tls-certificates=/etc/pki/vdisk&tls-verify-peer=false');
    assert.deepEqual(
      [t.tls, t.tlsCertificates, t.tlsVerifyPeer, t.displayName],
      [true, '/etc/pki/vdisk', false, 'nbds://h:10809/e'],
    );
    assert.equal(parseNbdUri('nbds+unix:///?socket=/s').tls, true);
  });

  it('refuse what QEMU refuses, saying why', () => {
    const bad: Array<[string, RegExp]> = [
      ['nbd+unix:///e', /needs \?socket=PATH/],
      ['nbd+unix://host/e?socket=/s', /has no host/],
      ['nbd://h/e?socket=/s', /for nbd\+unix/],
      ['nbd://h/e?foo=bar', /unsupported query parameter 'foo'/],
      ['nbd://h:99999/', /bad port/],
      ['nbd:///e', /no host/],
      ['nbd://h/e?tls-certificates=/x', /need the nbds scheme/],
      ['nbd://h/%zz', /percent-encoding/],
      ['nbds://h/?tls-verify-peer=maybe', /not a boolean/],
    ];
    for (const [uri, message] of bad) {
      assert.throws(
        () => parseNbdUri(uri),
        (err: unknown) => err instanceof VdiskError && err.code === 'EINVAL' && message.test(err.message),
        uri,
      );
    }
  });
});
