//! `p2u` — encode, inspect, export, verify and run progressive models (the
//! benchmark is the workspace's `p2u-bench`).

mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use p2u::format::expected_hash;
use p2u::format::manifest::Manifest;
use p2u::format::stream::read_all;
use p2u::{onnx, Error, ProgressiveModel, Result, RuntimeOptions};
use p2u_cli::flags::{encode_options, named_value, EncodeFlags};
use p2u_cli::{note, read_file as read, say};
use p2u_encode::EncodeOptions;

/// The command line.
#[derive(Parser)]
#[command(
    name = "p2u",
    version,
    about = "Progressive Precision Update for ONNX models: a low-bit base usable at once, and residual streams that refine it to the original weights bit for bit"
)]
pub struct Cli {
    /// Print nothing on stderr but errors (no progress, notes or summaries).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode MODEL.onnx into DIR: NAME.base.onnx, NAME.p2u and NAME.json.
    ///
    /// By default each tensor's effect on the outputs is measured on synthetic
    /// inputs derived from the model (images in [0, 1], or [0, 255] when the
    /// graph rescales); per-tensor base widths (3..8 bits or exact) are picked
    /// for the smallest served (entropy-coded) base whose outputs stay close to
    /// fp32 on those inputs, at most the size of a uniform 4-bit base, and the
    /// stream is ordered by gain per byte. With --calibration the user's
    /// samples replace the synthetic inputs, the base is rounded with GPTQ and
    /// 1..8-bit widths are allowed.
    Encode(EncodeCmd),
    /// Print the stages, bytes per stage and per-tensor bits and error.
    Inspect {
        /// An encoded directory.
        dir: PathBuf,
        /// Print the manifest as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Write the model at stage K (0 = base), or after the first N stream bytes, as a plain fp32 ONNX file.
    Export(ExportCmd),
    /// Apply every stage and check the weights are bit-identical to MODEL (exit code 0 only then).
    Verify {
        /// The original ONNX model.
        model: PathBuf,
        /// Its encoded directory.
        dir: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run the model at stage K (default: exact) in the native runtime on raw little-endian f32 input; writes the first output the same way.
    Run(RunCmd),
}

/// `p2u encode`.
#[derive(clap::Args)]
struct EncodeCmd {
    /// The fp32 ONNX model (external data next to it is read too).
    model: PathBuf,
    /// Output directory.
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    #[command(flatten)]
    flags: EncodeFlags,
    /// Class names for the manifest: a text file with one per line, or a JSON array (as many as the first output's classes).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// A model card for the manifest: a JSON object, or a text/Markdown file.
    #[arg(long, value_name = "FILE")]
    card: Option<PathBuf>,
    /// Print the manifest as JSON on stdout (instead of the stage table).
    #[arg(long)]
    json: bool,
}

/// `p2u export`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("at").required(true).args(["stage", "bytes"])))]
struct ExportCmd {
    /// An encoded directory.
    dir: PathBuf,
    /// The stage to export (0 = base).
    #[arg(long)]
    stage: Option<u32>,
    /// Export the model after this many bytes of the stream.
    #[arg(long)]
    bytes: Option<usize>,
    /// The ONNX file to write.
    #[arg(short, long, value_name = "OUT.onnx")]
    output: PathBuf,
    /// Print what was written as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `p2u run`.
#[derive(clap::Args)]
struct RunCmd {
    /// An encoded directory.
    dir: PathBuf,
    /// An input: raw little-endian f32 with --dims, or [NAME=]X.npy (float32, int64, int32, uint8 or bool, with its shape); one per model input, named or in order.
    #[arg(long, value_name = "X.f32|[NAME=]X.npy", required = true)]
    input: Vec<String>,
    /// The shape of a raw .f32 input, e.g. 1,3,224,224.
    #[arg(long, value_delimiter = ',')]
    dims: Vec<usize>,
    /// The stage to run at (default: exact).
    #[arg(long)]
    stage: Option<u32>,
    /// Where to write the first output: raw little-endian f32, or .npy when the name ends so.
    #[arg(short, long, value_name = "OUT.f32|OUT.npy", required_unless_present = "outputs")]
    output: Option<PathBuf>,
    /// Write every output as NAME.npy into this directory.
    #[arg(long, value_name = "DIR")]
    outputs: Option<PathBuf>,
    /// Print the stage and output shape as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Under WASI (the npm package's `npx p2u-onnx`) relative paths resolve
    // from "/" unless the launcher passes the caller's directory.
    #[cfg(target_os = "wasi")]
    if let Some(dir) = std::env::var_os("P2U_WASI_CWD") {
        if let Err(e) = std::env::set_current_dir(&dir) {
            eprintln!("p2u: error: cannot enter {}: {e}", std::path::Path::new(&dir).display());
            return ExitCode::FAILURE;
        }
    }
    let cli = Cli::parse();
    let quiet = cli.quiet;
    p2u_cli::QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    let result = match cli.command {
        Command::Encode(c) => encode(c, quiet),
        Command::Inspect { dir, json } => inspect(&dir, json),
        Command::Export(c) => export(c, quiet),
        Command::Verify { model, dir, json } => verify(&model, &dir, json),
        Command::Run(c) => run(c, quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2u: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` as one JSON line on stdout.
fn say_json(value: &impl serde::Serialize) {
    say!("{}", serde_json::to_string(value).expect("JSON values serialize"));
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Encodes `model_path` into `out_dir`, with a progress bar on stderr.
pub fn encode_file(
    model_path: &Path,
    model: &tract_onnx::pb::ModelProto,
    out_dir: &Path,
    opts: &EncodeOptions,
    about: &ModelAbout,
    quiet: bool,
) -> Result<Manifest> {
    let name = model_path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| Error::Invalid(format!("cannot name model {}", model_path.display())))?
        .to_string();
    opts.validate()?;
    let original = read(model_path)?;
    let info = p2u_encode::encoder::file_info(&model_path.file_name().unwrap_or_default().to_string_lossy(), &original);
    let mut bars = progress::Phases::new(quiet);
    let mut progress = |p: p2u_encode::encoder::Progress<'_>| bars.update(p.phase.name(), p.done, p.total);
    let mut enc = p2u_encode::encode(model, &name, info, opts, &mut progress)?;
    enc.manifest.labels = about.labels.clone();
    enc.manifest.card = about.card.clone();
    let dir = model_path.parent().unwrap_or(Path::new("."));
    enc.manifest.original_data =
        about.data_files.iter().map(|f| Ok(p2u_encode::encoder::file_info(f, &read(&dir.join(f))?))).collect::<Result<_>>()?;
    drop(progress);
    bars.finish();
    for n in &enc.notes {
        note!("note: {n}");
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(format!("creating {}", out_dir.display()), e))?;
    write(&out_dir.join(&enc.manifest.base.file), &enc.base)?;
    write(&out_dir.join(&enc.manifest.stream.file), &enc.stream)?;
    let json = serde_json::to_string_pretty(&enc.manifest).expect("manifest serializes");
    write(&out_dir.join(format!("{name}.json")), json.as_bytes())?;
    Ok(enc.manifest)
}

fn encode(c: EncodeCmd, quiet: bool) -> Result<()> {
    let t = std::time::Instant::now();
    // everything but the calibration data is checked before the model is read
    encode_options(&c.flags, None)?.validate()?;
    let card = c.card.as_deref().map(read_card).transpose()?;
    let (proto, data_files) = onnx::load_model_with_data(&c.model)?;
    let labels = c.labels.as_deref().map(|p| read_labels(p, &proto)).transpose()?.unwrap_or_default();
    let about = ModelAbout { labels, card, data_files };
    let m = encode_file(&c.model, &proto, &c.output, &encode_options(&c.flags, Some(&proto))?, &about, quiet)?;
    note!("encoded {} in {:.1} s", m.name, t.elapsed().as_secs_f64());
    if c.json {
        say_json(&m);
    } else {
        print_stages(&m);
    }
    Ok(())
}

/// What the manifest says about the model beyond its files (labels, card).
#[derive(Default)]
pub struct ModelAbout {
    labels: Vec<String>,
    card: Option<serde_json::Value>,
    /// The model's external data files, relative to it.
    data_files: Vec<String>,
}

/// Class names from a text file (one per line) or a JSON array of strings;
/// as many as the first output's last axis when that is fixed.
fn read_labels(path: &Path, model: &tract_onnx::pb::ModelProto) -> Result<Vec<String>> {
    let text = String::from_utf8(read(path)?).map_err(|_| Error::Invalid(format!("--labels {}: not UTF-8 text", path.display())))?;
    let labels: Vec<String> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("--labels {}: not a JSON array of strings: {e}", path.display())))?
    } else {
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    };
    if labels.is_empty() {
        return Err(Error::Invalid(format!("--labels {}: no labels", path.display())));
    }
    let classes = onnx::declared_outputs(model)?.first().and_then(|o| o.dims.last().copied().flatten());
    if let Some(n) = classes.filter(|&n| n != labels.len()) {
        return Err(Error::Invalid(format!(
            "--labels {}: {} labels, but the model's first output has {n} classes",
            path.display(),
            labels.len()
        )));
    }
    Ok(labels)
}

/// A model card: a JSON object as is, any other text as a string.
fn read_card(path: &Path) -> Result<serde_json::Value> {
    let text = String::from_utf8(read(path)?).map_err(|_| Error::Invalid(format!("--card {}: not UTF-8 text", path.display())))?;
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("--card {}: not a JSON object: {e}", path.display())));
    }
    Ok(serde_json::Value::String(text))
}

/// Loads the manifest of an encoded directory (the only `*.json` there).
pub fn load_manifest(dir: &Path) -> Result<Manifest> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let jsons: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    let [path] = jsons.as_slice() else {
        return Err(Error::Invalid(format!("{} should hold exactly one manifest (*.json), found {}", dir.display(), jsons.len())));
    };
    Manifest::from_json(&read(path)?).map_err(|e| Error::Invalid(format!("manifest {}: {e}", path.display())))
}

fn print_stages(m: &Manifest) {
    let orig = m.original_bytes() as f64;
    say!(
        "{:>5} {:>7} {:>4} {:>12} {:>12} {:>8} {:>12} {:>10}",
        "stage",
        "kind",
        "bits",
        "bytes",
        "cumulative",
        "of orig.",
        "weight rmse",
        "rel err"
    );
    for s in &m.stages {
        say!(
            "{:>5} {:>7} {:>4} {:>12} {:>12} {:>7.1}% {:>12.3e} {:>10.2e}",
            s.stage,
            s.kind,
            s.bits,
            s.bytes,
            s.cumulative_bytes,
            100.0 * s.cumulative_bytes as f64 / orig,
            s.error.rmse,
            s.error.relative
        );
    }
}

fn inspect(dir: &Path, json: bool) -> Result<()> {
    let m = load_manifest(dir)?;
    if json {
        say_json(&m);
        return Ok(());
    }
    say!("model {}  original {} ({} bytes, sha256 {}…)", m.name, m.original.file, m.original.bytes, short(&m.original.sha256));
    for f in &m.original_data {
        say!("  external data {} ({} bytes, sha256 {}…)", f.file, f.bytes, short(&f.sha256));
    }
    say!("base {} ({} bytes)  stream {} ({} bytes)", m.base.file, m.base.bytes, m.stream.file, m.stream.bytes);
    print_stages(&m);
    say!("\n{:<40} {:>16} {:>6} {:>5}  relative error per stage", "tensor", "shape", "groups", "bits");
    for t in &m.tensors {
        let errs: Vec<String> = t.error.iter().map(|e| format!("{:.1e}", e.relative)).collect();
        say!("{:<40} {:>16} {:>6} {:>5}  {}", t.name, format!("{:?}", t.dims), t.groups, t.base_bits, errs.join(" → "));
    }
    Ok(())
}

/// The first 12 characters of a hash for display (all of a shorter one).
fn short(hash: &str) -> &str {
    hash.char_indices().nth(12).map_or(hash, |(i, _)| &hash[..i])
}

/// Checks that `stage` is one of the manifest's stages.
fn check_stage(m: &Manifest, stage: u32) -> Result<()> {
    if stage > m.last_stage() {
        return Err(Error::Invalid(format!("--stage {stage}: {} has stages 0..={}", m.name, m.last_stage())));
    }
    Ok(())
}

/// Opens an encoded directory as a live model fed with `stages` stages of
/// its stream (`None` = all); returns it with the manifest. A stage the
/// manifest does not list is an error.
pub fn open_at_stage(dir: &Path, stage: Option<u32>, options: RuntimeOptions) -> Result<(ProgressiveModel, Manifest)> {
    let m = load_manifest(dir)?;
    if let Some(k) = stage {
        check_stage(&m, k)?;
    }
    let options = RuntimeOptions {
        base_sha256: expected_hash(&m.base.sha256, "manifest base.sha256")?,
        stream_header_sha256: expected_hash(&m.stream_header_sha256, "manifest stream_header_sha256")?,
        ..options
    };
    let mut model = ProgressiveModel::from_base(&read(&dir.join(&m.base.file))?, options)?;
    let stream = read(&dir.join(&m.stream.file))?;
    let (header, chunks) = read_all(&stream)?;
    model.attach(header)?;
    for chunk in chunks.iter().filter(|c| stage.is_none_or(|k| c.stage as u32 <= k)) {
        model.apply(chunk)?;
    }
    Ok((model, m))
}

fn export(c: ExportCmd, quiet: bool) -> Result<()> {
    let dir = &c.dir;
    let (model, what) = match (c.stage, c.bytes) {
        (Some(stage), _) => {
            let (model, m) = open_at_stage(dir, Some(stage), RuntimeOptions::default())?;
            (model, format!("stage {stage}, {}", m.stages[stage as usize].kind))
        }
        (None, n) => {
            let n = n.unwrap_or(usize::MAX);
            let m = load_manifest(dir)?;
            let mut model = ProgressiveModel::from_base(&read(&dir.join(&m.base.file))?, RuntimeOptions::default())?;
            let stream = read(&dir.join(&m.stream.file))?;
            model.feed(&stream[..n.min(stream.len())])?;
            let s = model.status();
            (model, format!("{} stream bytes: {} of {} chunks, stage {}", n.min(stream.len()), s.chunks_applied, s.chunks_total, s.stage))
        }
    };
    write(&c.output, &onnx::encode_model(&model.current_model()))?;
    let s = model.status();
    if c.json {
        say_json(
            &serde_json::json!({ "output": c.output, "stage": s.stage, "exact": s.exact, "chunks_applied": s.chunks_applied, "what": what }),
        );
    } else if !quiet {
        note!("wrote {} ({what})", c.output.display());
    }
    Ok(())
}

fn run(c: RunCmd, quiet: bool) -> Result<()> {
    let manifest = load_manifest(&c.dir)?;
    let base = onnx::decode_model(&read(&c.dir.join(&manifest.base.file))?)?;
    let declared = onnx::declared_inputs(&base)?;
    let fed = run_inputs(&c, &declared)?;
    let shapes: Vec<Vec<usize>> = fed.iter().map(|t| t.shape().to_vec()).collect();
    let (mut model, _) = open_at_stage(&c.dir, c.stage, RuntimeOptions { input_shapes: shapes, ..Default::default() })?;
    let names: Vec<String> = model.outputs().into_iter().map(|o| o.name).collect();
    let r = model.run(fed)?;
    let first = r.outputs.first().ok_or_else(|| Error::Engine("model has no output".into()))?;
    if let Some(path) = &c.output {
        let bytes = if path.extension().is_some_and(|e| e == "npy") {
            npy_bytes(first)?
        } else {
            let y = first
                .to_plain_array_view::<f32>()
                .map_err(|_| Error::Invalid(format!("output {:?} is {:?}: write it as .npy", names.first(), first.datum_type())))?;
            y.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        write(path, &bytes)?;
    }
    if let Some(dir) = &c.outputs {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        for (name, y) in names.iter().zip(&r.outputs) {
            let file: String = name.chars().map(|ch| if ch.is_ascii_alphanumeric() || "-_.".contains(ch) { ch } else { '_' }).collect();
            write(&dir.join(format!("{file}.npy")), &npy_bytes(y)?)?;
        }
    }
    let outputs: Vec<serde_json::Value> = names
        .iter()
        .zip(&r.outputs)
        .map(|(n, y)| serde_json::json!({ "name": n, "dims": y.shape(), "type": format!("{:?}", y.datum_type()) }))
        .collect();
    if c.json {
        say_json(
            &serde_json::json!({ "stage": r.status.stage, "stages": r.status.stages, "exact": r.status.exact, "dims": first.shape(), "outputs": outputs, "output": c.output }),
        );
    } else if !quiet {
        let written = c.output.iter().chain(&c.outputs).map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        note!("stage {} of {}, exact: {}, output {:?} → {written}", r.status.stage, r.status.stages, r.status.exact, first.shape());
    }
    Ok(())
}

/// The tensors `run` feeds, in the model's input order: `--input` values
/// named `NAME=…` go to that input, the others fill the rest in order; a
/// raw `.f32` file takes its shape from `--dims`, a `.npy` file has its own.
fn run_inputs(c: &RunCmd, declared: &[onnx::DeclaredInput]) -> Result<Vec<tract_onnx::prelude::Tensor>> {
    let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    if c.input.len() != declared.len() {
        return Err(Error::Invalid(format!(
            "the model takes {} inputs {names:?}; --input was given {} times",
            declared.len(),
            c.input.len()
        )));
    }
    let mut slots: Vec<Option<tract_onnx::prelude::Tensor>> = vec![None; declared.len()];
    let mut unnamed = vec![];
    for spec in &c.input {
        let (name, file) = named_value(spec);
        let path = Path::new(file);
        let tensor = if path.extension().is_some_and(|e| e == "npy") {
            npy_tensor(&read(path)?, file)?
        } else {
            if c.dims.is_empty() {
                return Err(Error::Invalid(format!("--input {file}: a raw .f32 input needs --dims (or give a .npy file)")));
            }
            let bytes = read(path)?;
            let need = c.dims.iter().try_fold(4usize, |a, &d| a.checked_mul(d));
            if need != Some(bytes.len()) {
                return Err(Error::Invalid(format!(
                    "{file}: {} bytes, dims {:?} need {}",
                    bytes.len(),
                    c.dims,
                    need.map_or("more than memory holds".to_string(), |n| n.to_string())
                )));
            }
            let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            tract_onnx::prelude::Tensor::from_shape(&c.dims, &values).map_err(|e| Error::Invalid(e.to_string()))?
        };
        match name {
            Some(n) => {
                let i = names
                    .iter()
                    .position(|&m| m == n)
                    .ok_or_else(|| Error::Invalid(format!("--input {n}=…: the model's inputs are {names:?}")))?;
                if slots[i].replace(tensor).is_some() {
                    return Err(Error::Invalid(format!("--input {n} given twice")));
                }
            }
            None => unnamed.push(tensor),
        }
    }
    let mut unnamed = unnamed.into_iter();
    slots.into_iter().map(|s| s.or_else(|| unnamed.next()).ok_or_else(|| Error::Invalid("an input was named twice".into()))).collect()
}

/// A `.npy` file's array as a tensor of its shape.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn npy_tensor(bytes: &[u8], file: &str) -> Result<tract_onnx::prelude::Tensor> {
    let (dims, values) = p2u_encode::calibrate::data::read_npy_array(bytes, &format!("--input {file}"))?;
    values.into_tensor(&dims)
}

/// `.npy` files are read by the native build only (see [`read_calibration`]).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn npy_tensor(_: &[u8], _: &str) -> Result<tract_onnx::prelude::Tensor> {
    Err(Error::Unsupported("reading .npy files needs the native p2u build".into()))
}

/// `.npy` files are written by the native build only (see [`read_calibration`]).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn npy_bytes(_: &tract_onnx::prelude::Tensor) -> Result<Vec<u8>> {
    Err(Error::Unsupported("writing .npy files needs the native p2u build".into()))
}

/// `y` as a `.npy` file (float32, int64, int32, uint8 or bool).
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn npy_bytes(y: &tract_onnx::prelude::Tensor) -> Result<Vec<u8>> {
    use tract_onnx::prelude::DatumType;
    fn write<T: npyz::AutoSerialize + tract_onnx::prelude::Datum + Copy>(
        y: &tract_onnx::prelude::Tensor,
        shape: &[u64],
    ) -> Result<Vec<u8>> {
        use npyz::WriterBuilder;
        let view = y.to_plain_array_view::<T>().map_err(|e| Error::Engine(e.to_string()))?;
        let mut out = vec![];
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(&mut out)
            .begin_nd()
            .map_err(|e| Error::io("writing .npy".to_string(), e))?;
        w.extend(view.iter().copied()).map_err(|e| Error::io("writing .npy".to_string(), e))?;
        w.finish().map_err(|e| Error::io("writing .npy".to_string(), e))?;
        Ok(out)
    }
    let shape: Vec<u64> = y.shape().iter().map(|&d| d as u64).collect();
    match y.datum_type() {
        DatumType::F32 => write::<f32>(y, &shape),
        DatumType::I64 => write::<i64>(y, &shape),
        DatumType::I32 => write::<i32>(y, &shape),
        DatumType::U8 => write::<u8>(y, &shape),
        DatumType::Bool => write::<bool>(y, &shape),
        other => Err(Error::Unsupported(format!("writing a {other:?} output as .npy"))),
    }
}

fn verify(model_path: &Path, dir: &Path, json: bool) -> Result<()> {
    let original = onnx::load_model(model_path)?;
    // the weights are compared, nothing is run: no plan, no input shapes needed
    let (model, _) = open_at_stage(dir, None, RuntimeOptions { defer_plan: true, ..RuntimeOptions::default() })?;
    let status = model.status();
    if !status.exact {
        return Err(Error::Mismatch(format!("the stream did not reach the exact stage: {status:?}")));
    }
    // every float constant of the original, quantized or passed through,
    // must come out of the final model with the same bits
    let rebuilt = model.current_model();
    let rebuilt = rebuilt.graph.as_ref().ok_or_else(|| Error::Onnx("rebuilt model has no graph".into()))?;
    let g = original.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    use tract_onnx::pb::tensor_proto::DataType;
    let floats = [DataType::Float as i32, DataType::Float16 as i32, DataType::Bfloat16 as i32];
    // by name, the bits of every float constant, subgraphs included (the
    // encoder lifts subgraph weights into the main graph; a name may repeat
    // across sibling subgraphs, so each name holds a sorted list)
    let by_name = |g| -> Result<std::collections::HashMap<String, Vec<Vec<u32>>>> {
        let mut m: std::collections::HashMap<String, Vec<Vec<u32>>> = std::collections::HashMap::new();
        for (name, t) in onnx::all_constant_tensors(g).into_iter().filter(|(_, t)| floats.contains(&t.data_type)) {
            // half precision as its f32 upcasts: one-to-one, so equal upcasts are equal bits
            m.entry(name).or_default().push(onnx::tensor_f32(t)?.iter().map(|v| v.to_bits()).collect());
        }
        m.values_mut().for_each(|v| v.sort());
        Ok(m)
    };
    let (want, got) = (by_name(g)?, by_name(rebuilt)?);
    let halves = onnx::all_constant_tensors(g).iter().filter(|(_, t)| floats[1..].contains(&t.data_type)).count();
    let mut checked = 0;
    for (name, values) in &want {
        match got.get(name) {
            None => return Err(Error::Mismatch(format!("tensor {name:?} is missing"))),
            Some(v) if v != values => return Err(Error::Mismatch(format!("tensor {name:?} differs from the original"))),
            Some(_) => checked += values.len(),
        }
    }
    let quantized = model.weight_names().count();
    if json {
        say_json(&serde_json::json!({ "ok": true, "float_tensors": checked, "half_tensors": halves, "quantized": quantized, "stages": status.stages }));
        return Ok(());
    }
    let halves = if halves > 0 { format!("; {halves} of them float16/bfloat16, served as their exact float32 upcasts") } else { String::new() };
    say!("OK: all {checked} float tensors bit-identical to the original ({quantized} quantized, refined through {} stages{halves})", status.stages);
    Ok(())
}
