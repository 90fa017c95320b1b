import type { InferenceSession } from 'onnxruntime-node';
import { DataType, encodeModel } from '../backbone/onnx-proto.ts';

/**
 * C = A·Bᵀ through ONNX Runtime's MLAS GEMM (AVX2/AVX-512 FMA kernels): an order of magnitude
 * faster than our WebAssembly kernel on the large products kNN and the RBF SVM need (measured in
 * `npm run bench -- heads`). ORT is already our inference engine, so this adds no dependency.
 * One session per thread count, created on first use (a memo, not state the results depend on).
 */
const sessions = new Map<number, Promise<InferenceSession>>();

function session(threads: number): Promise<InferenceSession> {
  let s = sessions.get(threads);
  if (!s) {
    s = (async () => {
      const ort = await import('onnxruntime-node');
      const model = encodeModel({
        producer: 'convcache', opset: 13,
        graph: {
          name: 'gemm_abt',
          nodes: [{ opType: 'Gemm', inputs: ['A', 'B'], outputs: ['C'], name: 'gemm', attrs: [{ name: 'transB', kind: 'int', value: 1 }] }],
          initializers: [],
          inputs: [{ name: 'A', dataType: DataType.FLOAT, shape: ['N', 'D'] }, { name: 'B', dataType: DataType.FLOAT, shape: ['M', 'D'] }],
          outputs: [{ name: 'C', dataType: DataType.FLOAT, shape: ['N', 'M'] }],
        },
      });
      return ort.InferenceSession.create(model, { intraOpNumThreads: threads, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } } });
    })();
    sessions.set(threads, s);
  }
  return s;
}

/** A (n×d) · Bᵀ (B m×d), row-major float32 → n×m. `threads` 1 keeps comparisons single-threaded. */
export async function matmulABtOrt(A: Float32Array, n: number, B: Float32Array, m: number, d: number, threads = 1): Promise<Float32Array> {
  const ort = await import('onnxruntime-node');
  const s = await session(threads);
  const out = await s.run({
    A: new ort.Tensor('float32', A.subarray(0, n * d), [n, d]),
    B: new ort.Tensor('float32', B.subarray(0, m * d), [m, d]),
  });
  return out.C!.data as Float32Array;
}
