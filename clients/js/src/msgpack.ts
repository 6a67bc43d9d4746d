/**
 * The subset of MessagePack Herald's frames use (maps, arrays, strings,
 * integers, floats, booleans, nil), without dependencies.
 */

export function decode(bytes: Uint8Array): unknown {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const text = new TextDecoder();
  const need = (n: number) => {
    if (at + n > bytes.length) throw new Error("MessagePack: truncated");
  };
  const str = (n: number) => {
    need(n);
    const s = text.decode(bytes.subarray(at, at + n));
    at += n;
    return s;
  };
  const arr = (n: number): unknown[] => {
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) out.push(value());
    return out;
  };
  const map = (n: number): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const k = value();
      out[String(k)] = value();
    }
    return out;
  };
  // 64-bit integers past 2^53 (snowflake ids) come as decimal strings:
  // a number would lose digits.
  const exact = (v: bigint): number | string =>
    v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v.toString();
  const u = (n: 1 | 2 | 4): number => {
    need(n);
    const v = n === 1 ? view.getUint8(at) : n === 2 ? view.getUint16(at) : view.getUint32(at);
    at += n;
    return v;
  };
  const i = (n: 1 | 2 | 4): number => {
    need(n);
    const v = n === 1 ? view.getInt8(at) : n === 2 ? view.getInt16(at) : view.getInt32(at);
    at += n;
    return v;
  };
  const u64 = (): number | string => {
    need(8);
    const v = exact(view.getBigUint64(at));
    at += 8;
    return v;
  };
  const i64 = (): number | string => {
    need(8);
    const v = exact(view.getBigInt64(at));
    at += 8;
    return v;
  };
  function value(): unknown {
    need(1);
    const b = bytes[at++];
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return arr(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xca: { need(4); const v = view.getFloat32(at); at += 4; return v; }
      case 0xcb: { need(8); const v = view.getFloat64(at); at += 8; return v; }
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return u64();
      case 0xd0: return i(1);
      case 0xd1: return i(2);
      case 0xd2: return i(4);
      case 0xd3: return i64();
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return arr(u(2));
      case 0xdd: return arr(u(4));
      case 0xde: return map(u(2));
      case 0xdf: return map(u(4));
      default: throw new Error(`MessagePack: unsupported type 0x${b.toString(16)}`);
    }
  }
  return value();
}

/** Encodes an ack frame: `{"type": "ack", "ids": [...]}`. */
export function encodeAck(ids: string[]): Uint8Array {
  const enc = new TextEncoder();
  const out: number[] = [];
  const str = (s: string) => {
    const b = enc.encode(s);
    if (b.length < 32) out.push(0xa0 | b.length);
    else if (b.length < 256) out.push(0xd9, b.length);
    else out.push(0xda, b.length >> 8, b.length & 0xff);
    for (const x of b) out.push(x);
  };
  out.push(0x82);
  str("type");
  str("ack");
  str("ids");
  if (ids.length < 16) out.push(0x90 | ids.length);
  else out.push(0xdc, ids.length >> 8, ids.length & 0xff);
  for (const id of ids) str(id);
  return new Uint8Array(out);
}

/** Encodes a ping frame: `{"type": "ping"}`. */
export function encodePing(): Uint8Array {
  // fixmap(1), fixstr "type", fixstr "ping"
  return new Uint8Array([0x81, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xa4, 0x70, 0x69, 0x6e, 0x67]);
}
