/** X.509 test credentials laid out as QEMU's tls-creds-x509 and libnbd expect them, made with openssl. */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './run.js';

async function ok(command: string, args: string[]): Promise<void> {
  const r = await run(command, args);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
}

/** A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made with openssl. */
export async function makeCertificates(dir: string): Promise<{ server: string; client: string }> {
  const server = path.join(dir, 'server');
  const client = path.join(dir, 'client');
  await mkdir(server);
  await mkdir(client);
  const ca = ['-CA', path.join(dir, 'ca-cert.pem'), '-CAkey', path.join(dir, 'ca-key.pem'), '-CAcreateserial'];
  await ok('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=vdisk test CA',
    '-keyout',
    path.join(dir, 'ca-key.pem'),
    '-out',
    path.join(dir, 'ca-cert.pem'),
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  for (const [who, subject, usage, ext] of [
    ['server', '/CN=localhost', 'serverAuth', 'subjectAltName=DNS:localhost,IP:127.0.0.1'],
    ['client', '/CN=vdisk-test-client', 'clientAuth', ''],
  ] as const) {
    const extfile = path.join(dir, `${who}.ext`);
    await writeFile(
      extfile,
      `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=${usage}\n${ext}\n`,
    );
    const target = who === 'server' ? server : client;
    await ok('openssl', [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      subject,
      '-keyout',
      path.join(target, `${who}-key.pem`),
      '-out',
      path.join(dir, `${who}.csr`),
    ]);
    await ok('openssl', [
      'x509',
      '-req',
      '-in',
      path.join(dir, `${who}.csr`),
      ...ca,
      '-days',
      '2',
      '-extfile',
      extfile,
      '-out',
      path.join(target, `${who}-cert.pem`),
    ]);
    await copyFile(path.join(dir, 'ca-cert.pem'), path.join(target, 'ca-cert.pem'));
  }
  return { server, client };
}
