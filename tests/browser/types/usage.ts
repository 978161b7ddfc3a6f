// Compiled (not run) by types.test.mjs with `tsc --strict`: the shipped
// p2u.d.ts must describe the package the way its README uses it.
import { load, loadInWorker, loadOnnx, fromImageData, P2uError, P2uModel, type RunResult, type StageStatus, type ValueMetadata } from 'p2u-onnx';

async function main(pixels: Uint8Array, image16: Int16Array, image: ImageData, wasmModule: WebAssembly.Module): Promise<number> {
  const controller = new AbortController();
  const model = await load('/model/model.json', {
    inputDims: [1, 3, 224, 224],
    onProgress: ({ file, loaded, total }) => console.log(file, loaded, total),
    onStage: (s: StageStatus) => console.log(s.stage, s.stages, s.final, s.source),
    signal: controller.signal,
    cache: 'my-cache',
    finalPlan: 'constants',
  });
  const first: RunResult = await model.run(pixels, [1, 3, 224, 224], { normalize: { range: [0, 255], to: [-1, 1] } });
  const windowed = await model.run(image16, [1, 3, 224, 224], { normalize: { window: { center: 40, width: 400 } } });
  const fromCanvas = await model.run(fromImageData(image, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], layout: 'NCHW' }));
  const logits = fromCanvas.byName[model.outputNames[0]].data;
  const input: ValueMetadata = model.inputMetadata[0];
  const exactStatus: StageStatus = await model.finalized;
  const isModel: boolean = model instanceof P2uModel;
  const inWorker = await loadInWorker({ base: '/m.base.onnx', stream: '/m.p2u' }, { inputDims: [1, 3, 224, 224], wasm: wasmModule });
  const w = await inWorker.run(new Float32Array(3 * 224 * 224), [1, 3, 224, 224]);
  inWorker.dispose();
  const text = await load('/text/text.json', { inputDims: [[1, 8], [1, 8]] });
  const ids = new BigInt64Array(8);
  const encoded = await text.run({ input_ids: { data: ids, dims: [1, 8] }, attention_mask: new BigInt64Array(8).fill(1n) });
  const hidden = encoded.byName['last_hidden_state'].data as Float32Array;
  const plain = await loadOnnx(new Uint8Array(8), { inputDims: [1, 3, 224, 224] });
  const p = await plain.run(new Float32Array(1), [1]);
  try {
    model.dispose();
  } catch (e) {
    if (e instanceof P2uError) console.log(e.kind);
  }
  return (first.output as Float32Array)[0] + hidden[0] + windowed.dims[0] + exactStatus.chunksApplied + Number(isModel) + w.outputs.length + p.outputs[0].data.length + first.stage + logits.length + input.shape.length + model.inputNames.length;
}
void main;
