/**
 * Image limits, apart from decode.ts so that reading a default does not load sharp (a no-op
 * `convcache extract` on an up-to-date cache never decodes, and should not pay for libvips).
 */

/** Refuse images with more pixels than this (decompression bombs). */
export const DEFAULT_MAX_PIXELS = 100_000_000;
