/**
 * The subset of MessagePack Herald's frames use (maps, arrays, strings,
 * integers, floats, booleans, nil), without dependencies.
 */
export declare function decode(bytes: Uint8Array): unknown;
/** Encodes an ack frame: `{"type": "ack", "ids": [...]}`. */
export declare function encodeAck(ids: string[]): Uint8Array;
/** Encodes a ping frame: `{"type": "ping"}`. */
export declare function encodePing(): Uint8Array;
