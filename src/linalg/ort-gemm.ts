import type { InferenceSession } from 'onnxruntime-node';
import { encodeModel } from '../onnx/write.ts';
import { DataType } from '../onnx/schema.ts';

/**
 * C = op(A)·op(B) through ONNX Runtime's MLAS GEMM (AVX2/AVX-512 FMA kernels): an order of magnitude
 * faster than our WebAssembly kernel on the large products kNN, the RBF SVM and the dense head need
 * (measured in `convcache bench heads`). ORT is already our inference engine, so this adds no
 * dependency. One session per (transposition, thread count), created on first use (a memo, not
 * state the results depend on).
 */
const sessions = new Map<string, Promise<InferenceSession>>();

function session(transA: boolean, transB: boolean, threads: number): Promise<InferenceSession> {
  const key = `${transA ? 1 : 0}${transB ? 1 : 0}:${threads}`;
  let s = sessions.get(key);
  if (!s) {
    s = (async () => {
      const ort = await import('onnxruntime-node');
      const model = encodeModel({
        producer: 'convcache',
        opset: 13,
        graph: {
          name: `gemm_${key.slice(0, 2)}`,
          nodes: [
            {
              opType: 'Gemm',
              inputs: ['A', 'B'],
              outputs: ['C'],
              name: 'gemm',
              attrs: [
                { name: 'transA', kind: 'int', value: transA ? 1 : 0 },
                { name: 'transB', kind: 'int', value: transB ? 1 : 0 },
              ],
            },
          ],
          initializers: [],
          inputs: [
            { name: 'A', dataType: DataType.FLOAT, shape: transA ? ['K', 'N'] : ['N', 'K'] },
            { name: 'B', dataType: DataType.FLOAT, shape: transB ? ['M', 'K'] : ['K', 'M'] },
          ],
          outputs: [{ name: 'C', dataType: DataType.FLOAT, shape: ['N', 'M'] }],
        },
      });
      return ort.InferenceSession.create(model, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        extra: { session: { intra_op: { allow_spinning: '0' } } },
      });
    })();
    sessions.set(key, s);
  }
  return s;
}

let ortModule: typeof import('onnxruntime-node') | undefined;

async function gemm(
  A: Float32Array,
  aShape: [number, number],
  B: Float32Array,
  bShape: [number, number],
  transA: boolean,
  transB: boolean,
  threads: number,
): Promise<Float32Array> {
  const ort = (ortModule ??= await import('onnxruntime-node'));
  const s = await session(transA, transB, threads);
  const out = await s.run({
    A: new ort.Tensor('float32', A.subarray(0, aShape[0] * aShape[1]), aShape),
    B: new ort.Tensor('float32', B.subarray(0, bShape[0] * bShape[1]), bShape),
  });
  return out.C!.data as Float32Array;
}

/** A (n×d) · Bᵀ (B m×d), row-major float32 → n×m. `threads` 1 keeps comparisons single-threaded. */
export function matmulABtOrt(
  A: Float32Array,
  n: number,
  B: Float32Array,
  m: number,
  d: number,
  threads = 1,
): Promise<Float32Array> {
  return gemm(A, [n, d], B, [m, d], false, true, threads);
}
