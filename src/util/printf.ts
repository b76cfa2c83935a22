/**
 * The few C printf conversions QEMU's tools print numbers with, reproduced exactly: glibc rounds
 * the exact binary value of a double to nearest, ties to even, where JavaScript's toFixed and
 * toPrecision round ties away from zero. "1.125 MiB" is "1.12 MiB" in qemu-img, so this matters.
 */

const TEN = 10n;

/** The exact value of a finite double as num / den, den a power of two. */
function exactFraction(x: number): [bigint, bigint] {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  let mantissa = bits & ((1n << 52n) - 1n);
  let exponent: number;
  if (biased === 0) {
    exponent = -1074;
  } else {
    mantissa |= 1n << 52n;
    exponent = biased - 1075;
  }
  return exponent >= 0 ? [mantissa << BigInt(exponent), 1n] : [mantissa, 1n << BigInt(-exponent)];
}

/** round(num / den * 10^decimals), ties to even; decimals may be negative. */
function roundScaled(num: bigint, den: bigint, decimals: number): bigint {
  let n = num;
  let d = den;
  if (decimals >= 0) n *= TEN ** BigInt(decimals);
  else d *= TEN ** BigInt(-decimals);
  const q = n / d;
  const r2 = (n % d) * 2n;
  if (r2 > d || (r2 === d && q % 2n === 1n)) return q + 1n;
  return q;
}

/** Writes the integer `scaled` as a decimal with `decimals` digits after the point. */
function placePoint(scaled: bigint, decimals: number): string {
  let digits = scaled.toString();
  if (decimals <= 0) return digits + '0'.repeat(-decimals);
  if (digits.length <= decimals) digits = '0'.repeat(decimals - digits.length + 1) + digits;
  return `${digits.slice(0, digits.length - decimals)}.${digits.slice(digits.length - decimals)}`;
}

function nonFinite(x: number): string | undefined {
  if (Number.isNaN(x)) return 'nan';
  if (x === Number.POSITIVE_INFINITY) return 'inf';
  if (x === Number.NEGATIVE_INFINITY) return '-inf';
  return undefined;
}

/** C's `%.<decimals>f`. */
export function formatFixed(x: number, decimals: number): string {
  const special = nonFinite(x);
  if (special) return special;
  const [num, den] = exactFraction(x);
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  return sign + placePoint(roundScaled(num, den, decimals), decimals);
}

/** C's `%.<precision>g` (no '#' flag: trailing zeros and a trailing point are dropped). */
export function formatGeneral(x: number, precision: number): string {
  const special = nonFinite(x);
  if (special) return special;
  const p = Math.max(precision, 1);
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  if (x === 0) return `${sign}0`;
  const [num, den] = exactFraction(x);
  // The decimal exponent of x, made exact by comparing against powers of ten.
  let exp = Math.floor(Math.log10(Math.abs(x)));
  const pow = (e: number): [bigint, bigint] => (e >= 0 ? [TEN ** BigInt(e), 1n] : [1n, TEN ** BigInt(-e)]);
  const below = (e: number): boolean => {
    const [pn, pd] = pow(e);
    return num * pd < pn * den; // x < 10^e
  };
  while (below(exp)) exp--;
  while (!below(exp + 1)) exp++;
  let scaled = roundScaled(num, den, p - 1 - exp);
  if (scaled >= TEN ** BigInt(p)) {
    exp++;
    scaled /= TEN;
  }
  const strip = (s: string): string => (s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s);
  if (exp < -4 || exp >= p) {
    const digits = scaled.toString();
    const mantissa = strip(digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits);
    const e = Math.abs(exp).toString().padStart(2, '0');
    return `${sign}${mantissa}e${exp < 0 ? '-' : '+'}${e}`;
  }
  return sign + strip(placePoint(scaled, p - 1 - exp));
}
