//! `p2u` — encode, inspect, export, verify and benchmark progressive models.

/// `println!` for results on stdout that ends the process quietly (exit 0)
/// when stdout is closed (`p2u inspect DIR | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("p2u: error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }};
}

mod bench;
mod curve;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[cfg(not(target_arch = "wasm32"))]
use p2u::calibrate::{self, images, Calibration};
use p2u::encoder::{BaseBudget, ChunkOrder};
use p2u::format::expected_hash;
use p2u::format::manifest::Manifest;
use p2u::format::stream::read_all;
use p2u::{onnx, EncodeOptions, Error, ProgressiveModel, Result, RuntimeOptions};

const USAGE: &str = "\
p2u — Progressive Precision Update for ONNX models

USAGE:
  p2u encode MODEL.onnx -o DIR [--base-budget BYTES|BITSb | --base-bits 2..8]
                               [--stages 4,8] [--order rate|layer] [--input-range LO,HI] [--synthetic-items N]
                               [--calibration X.npy|NAME=X.npy|DIR]... [--preprocess JSON|FILE]
                               [--block N] [--min-elements N] [--clip-norm P | --no-clip-search]
  p2u inspect DIR
  p2u export DIR (--stage K | --bytes N) -o OUT.onnx
  p2u verify MODEL.onnx DIR
  p2u run DIR --input X.f32 --dims 1,3,224,224 [--stage K] -o OUT.f32
  p2u bench [--models DIR] [--cache DIR] [--only NAME|kernel] [--eval-limit N]
            [--calibration-items N] [encode options] [--curve OUT_DIR [--points N]]

encode   writes DIR/NAME.base.onnx, DIR/NAME.p2u and DIR/NAME.json.
         By default each tensor's effect on the outputs is measured on
         synthetic inputs derived from the model (images in [0, 1], or
         [0, 255] when the graph rescales; --input-range to declare it;
         --synthetic-items, default 16, how many); it
         picks per-tensor base widths (3..8 bits or exact) under the served
         (entropy-coded) size of a uniform 4-bit base (--base-budget: BYTES,
         or BITSb for the size of a uniform BITS-bit base) and orders the
         stream by gain per byte (--order rate). --base-bits N: a uniform
         N-bit base instead; with --order layer nothing is measured.
         --calibration: the user's samples instead of synthetic inputs (the
         base is then rounded with GPTQ, and 1..8-bit widths are allowed):
         a .npy [N, …input] (float32, int64, int32, uint8, bool), NAME=X.npy
         per input of a multi-input model, a directory of .npy files
         (named after the inputs, or concatenated), or a directory of
         JPEG/PNG images preprocessed as --preprocess declares (JSON:
         resize, resize_shorter, crop, channels, layout, scale, mean, std,
         input; what is missing comes from the model's input).
inspect  prints the stages, bytes per stage and per-tensor bits and error
export   writes the model at stage K (0 = base), or after the first N bytes
         of the stream, as a plain fp32 ONNX file
verify   applies every stage and checks the weights are bit-identical to MODEL
         (exit code 0 only then)
run      runs the model at stage K (default: exact) in the native runtime on
         raw little-endian f32 input; writes the first output the same way
bench    measures bytes, accuracy per stage, kernel throughput and apply time;
         with --curve: accuracy vs bytes received for p2u and for direct
         quantization at 2/3/4/8 bits (OUT_DIR/NAME.curve.csv and .svg).
         --calibration-items N (default 512; 0 = data-free): the last N test
         images calibrate, the others are evaluated
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("encode") => encode(&args[1..]),
        Some("inspect") => inspect(&args[1..]),
        Some("export") => export(&args[1..]),
        Some("verify") => verify(&args[1..]),
        Some("run") => run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            say!("{}", USAGE.trim_end());
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(Error::Invalid(format!("unknown command {other:?}\n\n{USAGE}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2u: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Minimal flag parser: positional arguments plus `--flag value` pairs.
pub struct Args {
    positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    /// Parses `args`; `switches` are flags that take no value.
    pub fn parse(args: &[String], switches: &[&str]) -> Result<Args> {
        let (mut positional, mut flags) = (vec![], vec![]);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--").or_else(|| a.strip_prefix('-').filter(|n| n.len() == 1)) {
                if switches.contains(&name) {
                    flags.push((name.to_string(), None));
                } else {
                    let v = it.next().ok_or_else(|| Error::Invalid(format!("{a} needs a value")))?;
                    flags.push((name.to_string(), Some(v.clone())));
                }
            } else {
                positional.push(a.clone());
            }
        }
        Ok(Args { positional, flags })
    }
    /// Value of `--name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }
    /// Every value of a repeatable `--name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.flags.iter().filter(|(n, _)| n == name).filter_map(|(_, v)| v.as_deref()).collect()
    }
    /// True if the switch was given.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }
    /// Parsed value of `--name`, or `default`.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::Invalid(format!("--{name}: {v:?} is not a number"))),
        }
    }
    /// Positional argument `i`, or an error naming it.
    pub fn pos(&self, i: usize, what: &str) -> Result<&str> {
        self.positional.get(i).map(String::as_str).ok_or_else(|| Error::Invalid(format!("missing {what}\n\n{USAGE}")))
    }
    /// Fails on flags outside `known`.
    pub fn only(&self, known: &[&str]) -> Result<()> {
        match self.flags.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(Error::Invalid(format!("unknown option --{n}\n\n{USAGE}"))),
            None => Ok(()),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// The encoder flags shared by `encode` and `bench`.
pub const ENCODE_FLAGS: &[&str] = &[
    "base-bits",
    "stages",
    "block",
    "min-elements",
    "clip-norm",
    "no-clip-search",
    "calibration",
    "preprocess",
    "input-range",
    "synthetic-items",
    "order",
    "base-budget",
];

/// Parses the encoder flags shared by `encode` and `bench`; calibration
/// inputs are read against `model`'s inputs (and refused without one).
pub fn encode_options(a: &Args, model: Option<&tract_onnx::pb::ModelProto>) -> Result<EncodeOptions> {
    let mut o = EncodeOptions::default();
    if a.get("base-bits").is_some() {
        o.base_bits = a.num("base-bits", o.base_bits)?;
        o.base_budget = None;
    }
    if let Some(s) = a.get("stages") {
        o.refine_bits = s
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.trim().parse().map_err(|_| Error::Invalid(format!("--stages: {x:?} is not a bit width"))))
            .collect::<Result<_>>()?;
    }
    o.block = a.num("block", o.block)?;
    o.min_elements = a.num("min-elements", o.min_elements)?;
    o.clipping = match (a.has("no-clip-search"), a.get("clip-norm")) {
        (true, _) => p2u::Clipping::MinMax,
        (false, Some(_)) => p2u::Clipping::Norm(a.num("clip-norm", 2)?),
        (false, None) => p2u::Clipping::Auto,
    };
    let calibration = a.all("calibration");
    if let (false, Some(model)) = (calibration.is_empty(), model) {
        let c = read_calibration(&calibration, a.get("preprocess"), model)?;
        eprintln!("calibration: {c:?}");
        o.calibration = Some(std::sync::Arc::new(c));
    } else if calibration.is_empty() && a.get("preprocess").is_some() {
        return Err(Error::Invalid("--preprocess describes --calibration images: give --calibration DIR".into()));
    }
    if let Some(r) = a.get("input-range") {
        let bad = || Error::Invalid(format!("--input-range: {r:?} (give LO,HI, e.g. 0,255)"));
        let (lo, hi) = r.split_once(',').ok_or_else(bad)?;
        let (lo, hi): (f32, f32) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(bad());
        }
        if let Some(s) = o.synthetic.as_mut() {
            s.range = Some((lo, hi));
        }
    }
    if let Some(s) = o.synthetic.as_mut() {
        s.items = a.num("synthetic-items", s.items)?;
        if s.items == 0 {
            return Err(Error::Invalid("--synthetic-items must be at least 1".into()));
        }
    }
    if let Some(b) = a.get("base-budget") {
        o.base_budget = Some(parse_budget(b)?);
    }
    o.order = match a.get("order") {
        Some("rate") | None => ChunkOrder::Rate,
        Some("layer") => ChunkOrder::Layer,
        Some(v) => return Err(Error::Invalid(format!("--order: {v:?} (use rate or layer)"))),
    };
    Ok(o)
}

/// `--base-budget`: a byte count, or bits per weight with a `b` suffix.
pub fn parse_budget(v: &str) -> Result<BaseBudget> {
    let bad = || Error::Invalid(format!("--base-budget: {v:?} (give served bytes, e.g. 1200000, or bits per weight, e.g. 3b)"));
    match v.strip_suffix('b') {
        Some(bits) => bits.parse().map(BaseBudget::BitsPerWeight).map_err(|_| bad()),
        None => v.parse().map(BaseBudget::Bytes).map_err(|_| bad()),
    }
}

/// Calibration files are read by the native build only (the wasm32 build of
/// this binary exists because `cargo test` builds every target).
#[cfg(target_arch = "wasm32")]
fn read_calibration(_: &[&str], _: Option<&str>, _: &tract_onnx::pb::ModelProto) -> Result<p2u::calibrate::Calibration> {
    Err(Error::Unsupported("reading calibration files needs the native p2u build".into()))
}

/// Calibration inputs from the `--calibration` values: one `.npy` file,
/// `NAME=FILE.npy` per input, a directory of `.npy` files (named after the
/// model's inputs, or concatenated in name order), or a directory of images
/// preprocessed as `preprocess` (JSON text or a file holding it) declares.
#[cfg(not(target_arch = "wasm32"))]
fn read_calibration(specs: &[&str], preprocess: Option<&str>, model: &tract_onnx::pb::ModelProto) -> Result<Calibration> {
    let named = |spec: &str| match spec.split_once('=') {
        Some((name, path)) if !name.is_empty() && !Path::new(spec).exists() => (Some(name.to_string()), PathBuf::from(path)),
        _ => (None, PathBuf::from(spec)),
    };
    let inputs: Vec<String> = onnx::declared_inputs(model)?.into_iter().map(|d| d.name).collect();
    if let [spec] = specs {
        let (name, path) = named(spec);
        if path.is_dir() && name.is_none() {
            return read_calibration_dir(&path, preprocess, model, &inputs);
        }
    }
    if preprocess.is_some() {
        return Err(Error::Invalid("--preprocess applies to a --calibration directory of images".into()));
    }
    let mut parts = vec![];
    for spec in specs {
        let (name, path) = named(spec);
        if path.is_dir() {
            return Err(Error::Invalid(format!("--calibration {spec}: give one directory, or files")));
        }
        let what = |e: Error| Error::Invalid(format!("{}: {e}", path.display()));
        parts.push(calibrate::data::read_npy(&read(&path)?, name.as_deref()).map_err(what)?);
    }
    Calibration::from_inputs(parts, calibrate::Origin::Data)
}

#[cfg(not(target_arch = "wasm32"))]
fn read_calibration_dir(
    dir: &Path,
    preprocess: Option<&str>,
    model: &tract_onnx::pb::ModelProto,
    inputs: &[String],
) -> Result<Calibration> {
    let images = images::image_files(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let mut npys: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "npy")).collect();
    npys.sort();
    match (images.is_empty(), npys.is_empty()) {
        (false, true) => {
            let spec = match preprocess {
                None => images::Preprocess::default(),
                Some(p) if p.trim_start().starts_with('{') => images::Preprocess::from_json(p)?,
                Some(p) => images::Preprocess::from_json(&String::from_utf8_lossy(&read(Path::new(p))?))?,
            };
            let resolved = images::resolve(&spec, model)?;
            eprintln!("calibration images: {} from {}, {resolved}", images.len(), dir.display());
            images::from_images(&images, &resolved)
        }
        (true, false) => {
            if preprocess.is_some() {
                return Err(Error::Invalid("--preprocess applies to images, but the calibration directory holds .npy files".into()));
            }
            let stem = |p: &PathBuf| p.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            let per_input = inputs.len() > 1 || npys.iter().all(|p| inputs.contains(&stem(p)));
            let what = |p: &Path, e: Error| Error::Invalid(format!("{}: {e}", p.display()));
            if per_input {
                let parts = npys
                    .iter()
                    .map(|p| calibrate::data::read_npy(&read(p)?, Some(&stem(p))).map_err(|e| what(p, e)))
                    .collect::<Result<_>>()?;
                return Calibration::from_inputs(parts, calibrate::Origin::Data);
            }
            let mut parts = npys.iter().map(|p| Calibration::from_npy(&read(p)?, None).map_err(|e| what(p, e)));
            let first = parts.next().expect("not empty")?;
            parts.try_fold(first, |acc, next| acc.concat(&next?))
        }
        (false, false) => Err(Error::Invalid(format!("{} holds both images and .npy files: use one kind", dir.display()))),
        (true, true) => Err(Error::Invalid(format!("{} holds no image (.jpg, .png) and no .npy file", dir.display()))),
    }
}

/// Encodes `model_path` into `out_dir`, with a progress bar on stderr.
pub fn encode_file(
    model_path: &Path,
    model: &tract_onnx::pb::ModelProto,
    out_dir: &Path,
    opts: &EncodeOptions,
    quiet: bool,
) -> Result<Manifest> {
    let name = model_path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| Error::Invalid(format!("cannot name model {}", model_path.display())))?
        .to_string();
    opts.validate()?;
    let original = read(model_path)?;
    let info = p2u::encoder::file_info(&model_path.file_name().unwrap_or_default().to_string_lossy(), &original);
    // a bar redrawn in place on a terminal; one line per finished phase otherwise
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut started = (None, std::time::Instant::now());
    let mut progress = |p: p2u::encoder::Progress<'_>| {
        if quiet {
            return;
        }
        if started.0 != Some(p.phase) {
            started = (Some(p.phase), std::time::Instant::now());
        }
        let what = p.phase.name();
        if terminal {
            let width = 30;
            let fill = p.done * width / p.total.max(1);
            eprint!("\r{what:<22} [{}{}] {}/{}", "#".repeat(fill), " ".repeat(width - fill), p.done, p.total);
        }
        if p.done == p.total {
            let secs = started.1.elapsed().as_secs_f64();
            if terminal {
                eprintln!(" {secs:.1} s");
            } else {
                eprintln!("{what}: {} done in {secs:.1} s", p.total);
            }
        }
        let _ = std::io::stderr().flush();
    };
    let enc = p2u::encode(model, &name, info, opts, &mut progress)?;
    for note in &enc.notes {
        eprintln!("note: {note}");
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(format!("creating {}", out_dir.display()), e))?;
    write(&out_dir.join(&enc.manifest.base.file), &enc.base)?;
    write(&out_dir.join(&enc.manifest.stream.file), &enc.stream)?;
    let json = serde_json::to_string_pretty(&enc.manifest).expect("manifest serializes");
    write(&out_dir.join(format!("{name}.json")), json.as_bytes())?;
    Ok(enc.manifest)
}

fn encode(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &["no-clip-search"])?;
    a.only(&[&["o", "output"][..], ENCODE_FLAGS].concat())?;
    let model = PathBuf::from(a.pos(0, "MODEL.onnx")?);
    let out = PathBuf::from(a.get("o").or(a.get("output")).ok_or_else(|| Error::Invalid("missing -o DIR".into()))?);
    let t = std::time::Instant::now();
    // everything but the calibration data is checked before the model is read
    encode_options(&a, None)?.validate()?;
    let proto = onnx::load_model(&model)?;
    let m = encode_file(&model, &proto, &out, &encode_options(&a, Some(&proto))?, false)?;
    eprintln!("encoded {} in {:.1} s", m.name, t.elapsed().as_secs_f64());
    print_stages(&m);
    Ok(())
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
    let orig = m.original.bytes as f64;
    say!(
        "{:>5} {:>7} {:>4} {:>12} {:>12} {:>8} {:>12} {:>10}",
        "stage",
        "kind",
        "bits",
        "bytes",
        "cumulative",
        "of fp32",
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

fn inspect(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &[])?;
    a.only(&[])?;
    let m = load_manifest(Path::new(a.pos(0, "DIR")?))?;
    say!("model {}  original {} ({} bytes, sha256 {}…)", m.name, m.original.file, m.original.bytes, short(&m.original.sha256));
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

fn export(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &[])?;
    a.only(&["stage", "bytes", "o", "output"])?;
    let dir = PathBuf::from(a.pos(0, "DIR")?);
    let out = PathBuf::from(a.get("o").or(a.get("output")).ok_or_else(|| Error::Invalid("missing -o OUT.onnx".into()))?);
    let (model, what) = match (a.get("stage"), a.get("bytes")) {
        (Some(k), None) => {
            let stage: u32 = k.parse().map_err(|_| Error::Invalid("--stage takes a number".into()))?;
            let (model, m) = open_at_stage(&dir, Some(stage), RuntimeOptions::default())?;
            (model, format!("stage {stage}, {}", m.stages[stage as usize].kind))
        }
        (None, Some(n)) => {
            let n: usize = n.parse().map_err(|_| Error::Invalid("--bytes takes a number".into()))?;
            let m = load_manifest(&dir)?;
            let mut model = ProgressiveModel::from_base(&read(&dir.join(&m.base.file))?, RuntimeOptions::default())?;
            let stream = read(&dir.join(&m.stream.file))?;
            model.feed(&stream[..n.min(stream.len())])?;
            let s = model.status();
            (model, format!("{} stream bytes: {} of {} chunks, stage {}", n.min(stream.len()), s.chunks_applied, s.chunks_total, s.stage))
        }
        _ => return Err(Error::Invalid("give --stage K or --bytes N".into())),
    };
    write(&out, &onnx::encode_model(&model.current_model()))?;
    eprintln!("wrote {} ({what})", out.display());
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &[])?;
    a.only(&["input", "dims", "stage", "o", "output"])?;
    let dir = PathBuf::from(a.pos(0, "DIR")?);
    let dims: Vec<usize> = a
        .get("dims")
        .ok_or_else(|| Error::Invalid("missing --dims, e.g. 1,3,224,224".into()))?
        .split(',')
        .map(|d| d.trim().parse().map_err(|_| Error::Invalid(format!("--dims: {d:?} is not a number"))))
        .collect::<Result<_>>()?;
    let input = PathBuf::from(a.get("input").ok_or_else(|| Error::Invalid("missing --input X.f32".into()))?);
    let out = PathBuf::from(a.get("o").or(a.get("output")).ok_or_else(|| Error::Invalid("missing -o OUT.f32".into()))?);
    let stage = a.get("stage").map(|k| k.parse::<u32>().map_err(|_| Error::Invalid("--stage takes a number".into()))).transpose()?;
    let bytes = read(&input)?;
    if bytes.len() != 4 * dims.iter().product::<usize>() {
        return Err(Error::Invalid(format!(
            "{}: {} bytes, dims {dims:?} need {}",
            input.display(),
            bytes.len(),
            4 * dims.iter().product::<usize>()
        )));
    }
    let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
    let x = tract_onnx::prelude::Tensor::from_shape(&dims, &values).map_err(|e| Error::Invalid(e.to_string()))?;
    let (mut model, _) = open_at_stage(&dir, stage, RuntimeOptions { input_shapes: vec![dims], ..Default::default() })?;
    let r = model.run(vec![x])?;
    let y = r.outputs.first().ok_or_else(|| Error::Engine("model has no output".into()))?;
    let y = y.to_plain_array_view::<f32>().map_err(|e| Error::Engine(e.to_string()))?;
    write(&out, &y.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    eprintln!("stage {} of {}, exact: {}, output {:?} → {}", r.status.stage, r.status.stages, r.status.exact, y.shape(), out.display());
    Ok(())
}

fn verify(args: &[String]) -> Result<()> {
    let a = Args::parse(args, &[])?;
    a.only(&[])?;
    let original = onnx::load_model(Path::new(a.pos(0, "MODEL.onnx")?))?;
    let (model, _) = open_at_stage(Path::new(a.pos(1, "DIR")?), None, RuntimeOptions::default())?;
    let status = model.status();
    if !status.exact {
        return Err(Error::Mismatch(format!("the stream did not reach the exact stage: {status:?}")));
    }
    // every float constant of the original, quantized or passed through,
    // must come out of the final model with the same bits
    let rebuilt = model.current_model();
    let rebuilt = rebuilt.graph.as_ref().ok_or_else(|| Error::Onnx("rebuilt model has no graph".into()))?;
    let rebuilt: std::collections::HashMap<String, &tract_onnx::pb::TensorProto> = onnx::constant_tensors(rebuilt).into_iter().collect();
    let g = original.graph.as_ref().ok_or_else(|| Error::Onnx("model has no graph".into()))?;
    let float = tract_onnx::pb::tensor_proto::DataType::Float as i32;
    let mut checked = 0;
    for (name, t) in onnx::constant_tensors(g).into_iter().filter(|(_, t)| t.data_type == float) {
        let want = onnx::tensor_f32(t)?;
        let got = rebuilt.get(&name).ok_or_else(|| Error::Mismatch(format!("tensor {name:?} is missing")))?;
        let got = onnx::tensor_f32(got)?;
        if got.len() != want.len() || got.iter().zip(&want).any(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(Error::Mismatch(format!("tensor {name:?} differs from the original")));
        }
        checked += 1;
    }
    let quantized = model.weight_names().count();
    say!("OK: all {checked} float tensors bit-identical to the original ({quantized} quantized, refined through {} stages)", status.stages);
    Ok(())
}
