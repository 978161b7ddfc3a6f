// Compiled (not run) by types.test.mjs with `tsc --strict`: the shipped
// p2u.d.ts must describe the package the way its README uses it.
import { load, loadInWorker, loadOnnx, P2uError, P2uModel, type RunResult, type StageStatus } from 'p2u';

async function main(pixels: Uint8Array, image16: Int16Array): Promise<number> {
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
  const exactStatus: StageStatus = await model.finalized;
  const isModel: boolean = model instanceof P2uModel;
  const inWorker = await loadInWorker({ base: '/m.base.onnx', stream: '/m.p2u' }, { inputDims: [1, 3, 224, 224] });
  const w = await inWorker.run(new Float32Array(3 * 224 * 224), [1, 3, 224, 224]);
  inWorker.dispose();
  const plain = await loadOnnx(new Uint8Array(8), { inputDims: [1, 3, 224, 224] });
  const p = await plain.run(new Float32Array(1), [1]);
  try {
    model.dispose();
  } catch (e) {
    if (e instanceof P2uError) console.log(e.kind);
  }
  return first.output[0] + windowed.dims[0] + exactStatus.chunksApplied + Number(isModel) + w.outputs.length + p.outputs[0].data.length + first.stage;
}
void main;
