/**
 * The project's one seeded PRNG (mulberry32): fast, 32-bit state, good enough for bootstraps,
 * shuffles and splits. `new Rng(seed)` mixes and warms up the seed so nearby seeds diverge at
 * once; `Rng.plain(seed)` is the bare mulberry32 stream the dataset split has always used (its
 * cache bytes depend on it).
 */
export class Rng {
  private state: number;

  constructor(seed = 0, warmUp = true) {
    if (!warmUp) {
      this.state = seed >>> 0;
      return;
    }
    this.state = (seed ^ 0x9e3779b9) >>> 0;
    // Warm up so that nearby seeds diverge immediately.
    for (let i = 0; i < 4; i++) this.nextU32();
  }

  /** mulberry32 started from `seed` as is (no mixing, no warm-up). */
  static plain(seed: number): Rng {
    return new Rng(seed, false);
  }

  nextU32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }

  /** In-place Fisher-Yates shuffle. */
  shuffle<T extends { length: number; [i: number]: unknown }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }

  /** A fresh seed for a child generator (e.g. one per tree). */
  fork(): Rng {
    return new Rng(this.nextU32());
  }
}

/** The plain mulberry32 stream of `seed` as a function returning uniforms in [0, 1). */
export function seededRandom(seed: number): () => number {
  const rng = Rng.plain(seed);
  return () => rng.next();
}

/** 0..n-1 as an Int32Array. */
export function range(n: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}
