#!/usr/bin/env node
// The `vdisk` executable. It is CommonJS for one reason: libuv sizes its thread pool from
// UV_THREADPOOL_SIZE when the pool first starts, and loading ES modules already starts it. The
// pool runs file I/O when requests are in flight together; its default of 4 threads allows 4
// reads at a time where a disk serves 32 (QEMU's pool grows to 64). A size the user set is kept.
process.env.UV_THREADPOOL_SIZE ??= '32';
import('../dist/src/cli/main.js');
