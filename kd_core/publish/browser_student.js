// The KD student in the visitor's browser (kd_core/publish/browser_student.py): Gradio calls this function with the
// panel's HTML, whose data-kd attribute holds the payload; it returns the result element's HTML. Every file it
// fetches is on the app's own origin: the vendored onnxruntime-web bundle, the gzipped wasm and the student.
async (panel) => {
  const holder = new DOMParser().parseFromString(panel || "", "text/html").querySelector("[data-kd]");
  if (!holder) return "";
  const data = JSON.parse(holder.dataset.kd);
  const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const root = ((window.gradio_config && window.gradio_config.root) || window.location.origin).replace(/\/$/, "");
  const served = (path) => `${root}/gradio_api/file=${encodeURI(path)}`;
  const state = window.kdBrowserStudent || (window.kdBrowserStudent = {});
  try {
    if (!state.ort) {  // once per page: the runtime and its wasm, inflated here (3.8 MB over the wire, 15 MB inflated)
      const start = performance.now();
      const inflate = async (response) => {
        if (!response.ok) throw new Error(`${response.status} for the onnxruntime-web wasm`);
        return new Response(response.body.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
      };
      const [ort, wasm] = await Promise.all([import(served(data.bundle)), fetch(served(data.wasm)).then(inflate)]);
      ort.env.wasm.numThreads = 1;  // no SharedArrayBuffer: works without COOP/COEP headers
      ort.env.wasm.proxy = false;
      ort.env.wasm.wasmBinary = wasm;
      Object.assign(state, {ort, loadMs: performance.now() - start});
    }
    if (state.model !== data.model) {
      const start = performance.now();
      state.session = await state.ort.InferenceSession.create(served(data.model), {executionProviders: ["wasm"]});
      Object.assign(state, {model: data.model, createMs: performance.now() - start});
    }
    const bytes = Uint8Array.from(atob(data.input), (c) => c.charCodeAt(0));
    const feeds = {[data.input_name]: new state.ort.Tensor("uint8", bytes, data.shape)};
    let output = await state.session.run(feeds);  // the first run allocates; it is not timed
    const start = performance.now();
    for (let i = 0; i < data.runs; i++) output = await state.session.run(feeds);
    const ms = (performance.now() - start) / data.runs;
    const logits = Array.from(output[state.session.outputNames[0]].data);
    if (data.bias) logits[data.bias[0]] += data.bias[1];
    const top = Math.max(...logits);
    const exps = logits.map((v) => Math.exp(v - top));
    const total = exps.reduce((a, b) => a + b, 0);
    const ranked = exps.map((e, i) => [e / total, data.classes[i]]).sort((a, b) => b[0] - a[0]).slice(0, 3);
    const percent = (p) => `${(100 * p).toFixed(1)} %`;
    return `<div class="kd-browser-result" data-model="${escape(data.model)}" data-input="${escape(data.input)}" ` +
      `data-logits="${escape(JSON.stringify(logits))}" ` +
      `data-ms="${ms}" data-create-ms="${state.createMs}" data-load-ms="${state.loadMs}">` +
      `<b>${escape(ranked[0][1])}</b> · ${ms.toFixed(3)} ms per image (mean of ${data.runs} runs on this device, ` +
      `onnxruntime-web, 1 wasm thread) · top 3: ${ranked.map(([p, c]) => `${escape(c)} ${percent(p)}`).join(", ")}` +
      ` · server (ONNX Runtime in Python): ${escape(data.server_class)} · runtime loaded in ` +
      `${state.loadMs.toFixed(0)} ms, session created in ${state.createMs.toFixed(0)} ms</div>`;
  } catch (error) {
    return `<div class="kd-browser-result">The browser could not run the student: ${escape(error.message || error)}</div>`;
  }
}
