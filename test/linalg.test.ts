import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matmul, matmulABt, matmulABtJs, matTvec, matvec } from '../src/linalg/matmul.ts';
import { wasmGemm } from '../src/linalg/wasm-gemm.ts';
import { lbfgs } from '../src/linalg/lbfgs.ts';
import { Rng } from '../src/linalg/random.ts';

/** Naive reference C = A·B (A n×k, B k×m). The oracle the fast kernels are checked against. */
function matmulNaive(A: ArrayLike<number>, B: ArrayLike<number>, n: number, k: number, m: number): Float32Array {
  const C = new Float32Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += A[i * k + t]! * B[t * m + j]!;
      C[i * m + j] = s;
    }
  }
  return C;
}

function randMat(rng: Rng, n: number, d: number): Float32Array {
  return Float32Array.from({ length: n * d }, () => rng.normal());
}

function transpose(A: Float32Array, n: number, d: number): Float32Array {
  const T = new Float32Array(n * d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) T[j * n + i] = A[i * d + j]!;
  return T;
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!));
    if (err > tol) assert.fail(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
  }
}

test('Rng is deterministic per seed and uniform-ish', () => {
  const a = new Rng(42),
    b = new Rng(42),
    c = new Rng(43);
  const xa = Array.from({ length: 5 }, () => a.nextU32());
  assert.deepEqual(
    xa,
    Array.from({ length: 5 }, () => b.nextU32()),
  );
  assert.notDeepEqual(
    xa,
    Array.from({ length: 5 }, () => c.nextU32()),
  );
  const r = new Rng(1);
  let s = 0;
  for (let i = 0; i < 10000; i++) s += r.next();
  assert.ok(Math.abs(s / 10000 - 0.5) < 0.02);
});

test('matmulABt (SIMD and TS paths) matches a naive triple loop, odd sizes', () => {
  const rng = new Rng(1);
  assert.ok(wasmGemm(), 'WebAssembly SIMD kernel should compile on Node 20');
  for (const [n, m, d] of [
    [1, 1, 1],
    [7, 11, 13],
    [37, 50, 70],
    [130, 97, 768],
  ] as const) {
    const A = randMat(rng, n, d),
      B = randMat(rng, m, d);
    const ref = matmulNaive(A, transpose(B, m, d), n, d, m);
    assertClose(matmulABt(A, n, B, m, d), ref, 1e-4, `wasm ${n}x${m}x${d}`);
    assertClose(matmulABtJs(A, n, B, m, d), ref, 1e-4, `js ${n}x${m}x${d}`);
  }
});

test('matmul (i-k-j), matvec and matTvec match naive', () => {
  const rng = new Rng(3);
  const n = 9,
    k = 14,
    m = 6;
  const A = randMat(rng, n, k),
    B = randMat(rng, k, m);
  assertClose(matmul(A, B, n, k, m), matmulNaive(A, B, n, k, m), 1e-5, 'matmul');
  const w = Float64Array.from({ length: k }, () => rng.normal());
  const out = new Float64Array(n);
  matvec(A, n, k, w, 0, out, 1, 0, 0.5);
  assertClose(
    out,
    matmulNaive(A, w, n, k, 1).map((v) => v + 0.5),
    1e-5,
    'matvec',
  );
  const r = Float64Array.from({ length: n }, () => rng.normal());
  const g = new Float64Array(k);
  matTvec(A, n, k, r, 1, 0, g, 0);
  assertClose(g, matmulNaive(transpose(A, n, k), r, k, n, 1), 1e-5, 'matTvec');
});

test('L-BFGS minimises a convex quadratic to the exact solution', () => {
  // f(x) = ½ xᵀ D x − bᵀx with D diagonal 1..20: optimum x_i = b_i / D_i.
  const n = 20;
  const D = Float64Array.from({ length: n }, (_, i) => i + 1);
  const b = Float64Array.from({ length: n }, (_, i) => Math.sin(i) * 3);
  const res = lbfgs(
    (x, g) => {
      let f = 0;
      for (let i = 0; i < n; i++) {
        g[i] = D[i]! * x[i]! - b[i]!;
        f += 0.5 * D[i]! * x[i]! * x[i]! - b[i]! * x[i]!;
      }
      return f;
    },
    new Float64Array(n),
    { gtol: 1e-9, maxIter: 200, ftol: 0 },
  );
  assert.ok(res.converged);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(res.x[i]! - b[i]! / D[i]!) < 1e-6, `x[${i}]`);
});

test('L-BFGS solves the Rosenbrock function', () => {
  const res = lbfgs(
    (x, g) => {
      const [a, b] = [x[0]!, x[1]!];
      g[0] = -2 * (1 - a) - 400 * a * (b - a * a);
      g[1] = 200 * (b - a * a);
      return (1 - a) ** 2 + 100 * (b - a * a) ** 2;
    },
    Float64Array.from([-1.2, 1]),
    { gtol: 1e-8, maxIter: 500, ftol: 0 },
  );
  assert.ok(
    Math.abs(res.x[0]! - 1) < 1e-5 && Math.abs(res.x[1]! - 1) < 1e-5,
    `got ${res.x[0]}, ${res.x[1]} after ${res.iterations}`,
  );
});

test('ResidentMatrix SIMD matvec / matTvec match the float64 loops', async () => {
  const { ResidentMatrix } = await import('../src/linalg/matmul.ts');
  const rng = new Rng(4);
  const n = 23,
    d = 37;
  const A = randMat(rng, n, d);
  const res = ResidentMatrix.create(A, n, d);
  assert.ok(res);
  const w = Float64Array.from({ length: d + 3 }, () => rng.normal());
  const a = new Float64Array(2 * n),
    b = new Float64Array(2 * n);
  res.matvec(w, 3, a, 2, 1, 0.25);
  matvec(A, n, d, w, 3, b, 2, 1, 0.25);
  assertClose(a, b, 1e-5, 'resident matvec');
  const r = Float64Array.from({ length: 2 * n }, () => rng.normal());
  const g1 = new Float64Array(d + 1),
    g2 = new Float64Array(d + 1);
  res.matTvec(r, 2, 1, g1, 1);
  matTvec(A, n, d, r, 2, 1, g2, 1);
  assertClose(g1, g2, 1e-5, 'resident matTvec');
  matmulABt(A, n, A, n, d); // reuses the kernel memory
  assert.throws(() => res.matvec(w, 0, a, 1, 0));
});
