//! `p2u-bench --curve DIR`: accuracy against cumulative bytes received, for
//! the p2u stream (measured at about `--points` byte positions and at every
//! stage end), for p2u bases alone at 2, 3 and 4 bits, and for direct
//! min/max quantization of the same model at 2..=8 bits. Base bytes are
//! counted as served ([`p2u_encode::encoder::budget::served_bytes`]: codes at
//! their entropy-coded size), for p2u and direct alike. Prints the table,
//! whether p2u is at or above direct quantization at each direct point's
//! budget, and writes `DIR/NAME.curve.csv` and `DIR/NAME.curve.svg`.

use std::fmt::Write as _;
use std::path::Path;

use p2u::format::stream::read_all;
use p2u::{Error, ProgressiveModel, Result, RuntimeOptions};
use p2u_cli::say;
use p2u_encode::EncodeOptions;

use crate::bench::{accuracy, base_only, predict, EvalSet};

/// One measured point: bytes received and top-1 accuracy (%).
struct Point {
    bytes: u64,
    accuracy: f64,
    label: String,
}

/// Measures and writes the curve of one model.
#[allow(clippy::too_many_arguments)]
pub fn curve(
    name: &str,
    model: &tract_onnx::pb::ModelProto,
    info: p2u::format::manifest::FileInfo,
    opts: &EncodeOptions,
    eval: &EvalSet,
    rt: &RuntimeOptions,
    points: usize,
    out: &Path,
) -> Result<()> {
    let labels = eval.labels.as_ref().ok_or_else(|| Error::Invalid(format!("{name}: the curve needs labelled data")))?;
    let score = |m: &mut ProgressiveModel| predict(m, eval).map(|p| accuracy(&p, labels));
    let enc = p2u_encode::encode(model, name, info.clone(), opts, &mut |_| {})?;
    let (header, chunks) = read_all(&enc.stream)?;
    let frames: u64 = chunks.iter().map(|c| c.frame_len() as u64).sum();
    let mut received = served_size(&enc) + enc.stream.len() as u64 - frames;
    let total = served_size(&enc) + enc.stream.len() as u64;
    let step = total / points.max(1) as u64;

    let mut live = ProgressiveModel::from_base(&enc.base, rt.clone())?;
    let mut p2u_points = vec![Point { bytes: received, accuracy: score(&mut live)?, label: "base".into() }];
    live.attach(header)?;
    let (mut stage, mut next_mark) = (0, received + step);
    for chunk in &chunks {
        live.apply(chunk)?;
        received += chunk.frame_len() as u64;
        let s = live.status().stage;
        if s > stage || received >= next_mark {
            let label = if s > stage { format!("stage {s}") } else { String::new() };
            stage = s;
            next_mark = received + step;
            p2u_points.push(Point { bytes: received, accuracy: score(&mut live)?, label });
        }
    }

    let mut bases = vec![];
    for bits in [2u8, 3, 4] {
        let (q, mut m) = base_only(model, name, &info, opts, bits, rt)?;
        bases.push(Point { bytes: served_size(&q), accuracy: score(&mut m)?, label: format!("{bits} bit") });
    }
    let mut direct = vec![];
    for bits in 2u8..=8 {
        let min_max = EncodeOptions { clipping: p2u_encode::Clipping::MinMax, ..EncodeOptions::uniform(bits) };
        let (q, mut m) = base_only(model, name, &info, &min_max, bits, rt)?;
        direct.push(Point { bytes: served_size(&q), accuracy: score(&mut m)?, label: format!("{bits} bit") });
    }

    say!("accuracy vs bytes received ({}: {} images), fp32 file {} B:", eval.what(), eval.len(), info.bytes);
    let mut csv = String::from("series,bytes,top1,label\n");
    for (series, pts) in [("p2u", &p2u_points), ("p2u-base", &bases), ("direct", &direct)] {
        for p in pts.iter() {
            say!("  {series:<6} {:>12} B  top-1 {:6.2}%  {}", p.bytes, p.accuracy, p.label);
            let _ = writeln!(csv, "{series},{},{:.4},{}", p.bytes, p.accuracy, p.label);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let write = |file: String, text: &str| {
        let path = out.join(file);
        std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        say!("  wrote {}", path.display());
        Ok::<_, Error>(())
    };
    say!("p2u (stream or a base alone) at each direct point's budget:");
    for d in &direct {
        let best = p2u_points.iter().chain(&bases).filter(|p| p.bytes <= d.bytes).map(|p| p.accuracy).fold(f64::NAN, f64::max);
        let verdict = if best >= d.accuracy { "p2u ≥ direct" } else { "p2u < direct" };
        say!("  direct {:<6} {:>10} B {:6.2}%  |  best p2u within it {:6.2}%  {verdict}", d.label, d.bytes, d.accuracy, best);
    }
    write(format!("{name}.curve.csv"), &csv)?;
    write(format!("{name}.curve.svg"), &svg(name, &p2u_points, &bases, &direct, info.bytes))?;
    Ok(())
}

/// The base file's size as served: each tensor's codes, scales and zero
/// points at their served size, the rest of the file as stored.
fn served_size(enc: &p2u_encode::Encoded) -> u64 {
    let (stored, served) = enc.manifest.tensors.iter().fold((0u64, 0u64), |(s, v), t| (s + t.bytes[0], v + t.base_served_bytes));
    enc.base.len() as u64 - stored + served
}

/// A line for p2u, squares for p2u bases alone, dots for direct
/// quantization, a dashed line at the final accuracy; bytes on a linear
/// axis up to the fp32 size.
fn svg(name: &str, p2u: &[Point], bases: &[Point], direct: &[Point], fp32_bytes: u64) -> String {
    let (w, h, l, r, t, b) = (720.0, 420.0, 60.0, 20.0, 36.0, 50.0);
    let max_x = fp32_bytes.max(p2u.iter().chain(direct).map(|p| p.bytes).max().unwrap_or(1)) as f64;
    let x = |bytes: u64| l + (w - l - r) * bytes as f64 / max_x;
    let y = |acc: f64| t + (h - t - b) * (1.0 - acc / 100.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"{l}\" y=\"20\" font-size=\"14\">{name}: top-1 accuracy vs bytes received</text>\n"
    );
    for pct in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{pct}%</text>",
            w - r,
            l - 6.0,
            y(pct) + 4.0,
            y0 = y(pct)
        );
    }
    for i in 0..=4 {
        let bytes = (max_x * i as f64 / 4.0) as u64;
        let _ =
            writeln!(s, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.1} MB</text>", x(bytes), h - b + 18.0, bytes as f64 / 1e6);
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">bytes received (fp32 file = right edge)</text>",
        (l + w - r) / 2.0,
        h - 10.0
    );
    if let Some(last) = p2u.last() {
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#888\" stroke-dasharray=\"4 4\"/>",
            w - r,
            y0 = y(last.accuracy)
        );
    }
    let line: Vec<String> = p2u.iter().map(|p| format!("{:.1},{:.1}", x(p.bytes), y(p.accuracy))).collect();
    let _ = writeln!(s, "<polyline points=\"{}\" fill=\"none\" stroke=\"#0b5fff\" stroke-width=\"2\"/>", line.join(" "));
    for p in p2u {
        let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#0b5fff\"/>", x(p.bytes), y(p.accuracy));
    }
    for p in bases {
        let (cx, cy) = (x(p.bytes), y(p.accuracy));
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"#15803d\"/><text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#15803d\">{}</text>",
            cx - 4.0,
            cy - 4.0,
            cy + 18.0,
            p.label
        );
    }
    for p in direct {
        let (cx, cy) = (x(p.bytes), y(p.accuracy));
        let _ = writeln!(
            s,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"#c2410c\"/><text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#c2410c\">{}</text>",
            cy - 9.0,
            p.label
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{x0}\" y=\"{}\" fill=\"#0b5fff\">— p2u (base + stream)</text><text x=\"{x0}\" y=\"{}\" fill=\"#15803d\">■ p2u base alone</text><text x=\"{x0}\" y=\"{}\" fill=\"#c2410c\">● direct min/max quantization</text>",
        h - b - 46.0,
        h - b - 30.0,
        h - b - 14.0,
        x0 = w - r - 330.0
    );
    s.push_str("</svg>\n");
    s
}
