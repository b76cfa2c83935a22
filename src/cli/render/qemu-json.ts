/**
 * QEMU's way of printing a QObject: the order of a QDict's keys and the pretty JSON text of
 * qobject_to_json_pretty, and the indented "key: value" dump of qemu-img info's human output.
 *
 * A QDict is a hash table of 512 buckets (qobject/qdict.c): iteration goes bucket by bucket and,
 * inside a bucket, from the last inserted key. That is why qemu-img info prints "virtual-size"
 * before "filename". Objects here are taken to list their keys in QEMU's insertion order (the
 * QAPI schema's field order); qdictOrder gives the order QEMU prints them in.
 */

const QDICT_BUCKETS = 512;

/** QEMU's tdb_hash of a key. */
function tdbHash(name: string): number {
  const bytes = Buffer.from(name, 'utf8');
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    value = (value + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** The order QEMU iterates a QDict built by inserting `keys` in this order. */
export function qdictOrder(keys: readonly string[]): string[] {
  const buckets = new Map<number, string[]>();
  for (const key of keys) {
    const bucket = tdbHash(key) % QDICT_BUCKETS;
    const list = buckets.get(bucket) ?? [];
    list.unshift(key); // QLIST_INSERT_HEAD
    buckets.set(bucket, list);
  }
  return [...buckets.keys()].sort((a, b) => a - b).flatMap((bucket) => buckets.get(bucket)!);
}

/** The same object with its keys in QEMU's print order (recursively), for JS consumers. */
export function inQdictOrder<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v) => inQdictOrder(v)) as T;
  if (value === null || typeof value !== 'object') return value;
  const source = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of qdictOrder(Object.keys(source).filter((k) => source[k] !== undefined))) {
    out[key] = inQdictOrder(source[key]);
  }
  return out as T;
}

/** A JSON string as QEMU's JSON writer quotes it: control and non-ASCII characters as \uXXXX. */
export function quoteJsonString(text: string): string {
  let out = '"';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        break;
      case '\\':
        out += '\\\\';
        break;
      case '\b':
        out += '\\b';
        break;
      case '\f':
        out += '\\f';
        break;
      case '\n':
        out += '\\n';
        break;
      case '\r':
        out += '\\r';
        break;
      case '\t':
        out += '\\t';
        break;
      default:
        if (cp > 0xffff) {
          const hex = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
          out += `\\u${hex(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
        } else if (cp < 0x20 || cp >= 0x7f) {
          out += `\\u${cp.toString(16).toUpperCase().padStart(4, '0')}`;
        } else {
          out += ch;
        }
    }
  }
  return `${out}"`;
}

function scalar(value: unknown): string {
  if (typeof value === 'string') return quoteJsonString(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  if (value === null) return 'null';
  throw new TypeError(`Cannot print ${typeof value} as JSON`);
}

/**
 * qobject_to_json_pretty: four spaces per level, "key": value, objects in QDict order, and an
 * empty object or array closed on its own line as QEMU's writer does.
 */
export function toQemuJson(value: unknown, depth = 0): string {
  const pad = (n: number): string => ' '.repeat(n * 4);
  if (Array.isArray(value)) {
    const items = value.map((v) => `\n${pad(depth + 1)}${toQemuJson(v, depth + 1)}`);
    return `[${items.join(',')}\n${pad(depth)}]`;
  }
  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    const keys = qdictOrder(Object.keys(record).filter((k) => record[k] !== undefined));
    const items = keys.map((k) => `\n${pad(depth + 1)}${quoteJsonString(k)}: ${toQemuJson(record[k], depth + 1)}`);
    return `{${items.join(',')}\n${pad(depth)}}`;
  }
  return scalar(value);
}

/**
 * qemu-img info's dump of a format-specific dict (dump_qdict/dump_qlist in block/qapi.c): one
 * "key: value" per line, '-' in keys shown as ' ', nested values on following lines 4 spaces
 * further in, list items as "[i]:".
 */
export function dumpQobject(value: unknown, indentation: number): string {
  const pad = ' '.repeat(indentation * 4);
  const composite = (v: unknown): boolean => v !== null && typeof v === 'object';
  const line = (label: string, v: unknown): string =>
    composite(v)
      ? `${pad}${label}:\n${dumpQobject(v, indentation + 1)}`
      : `${pad}${label}: ${typeof v === 'string' ? v : scalar(v)}\n`;
  if (Array.isArray(value)) return value.map((v, i) => line(`[${i}]`, v)).join('');
  if (composite(value)) {
    const record = value as Record<string, unknown>;
    const keys = qdictOrder(Object.keys(record).filter((k) => record[k] !== undefined));
    return keys.map((k) => line(k.replaceAll('-', ' '), record[k])).join('');
  }
  return `${pad}${typeof value === 'string' ? value : scalar(value)}\n`;
}
