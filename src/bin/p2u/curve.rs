//! `p2u bench --curve DIR`: accuracy against cumulative bytes received, for
//! the p2u stream (measured at about `--points` byte positions and at every
//! stage end) and for direct min/max quantization of the same model at 2, 3,
//! 4 and 8 bits (the base formats ONNX files can hold; their bytes are
//! counted with the codes bit-packed). Prints the table and writes
//! `DIR/NAME.curve.csv` and `DIR/NAME.curve.svg`.

use std::fmt::Write as _;
use std::path::Path;

use p2u::format::stream::read_all;
use p2u::{EncodeOptions, Error, ProgressiveModel, Result, RuntimeOptions};

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
    let enc = p2u::encode(model, name, info.clone(), opts, &mut |_| {})?;
    let (header, chunks) = read_all(&enc.stream)?;
    let frames: u64 = chunks.iter().map(|c| c.to_bytes().len() as u64).sum();
    let mut received = enc.base.len() as u64 + enc.stream.len() as u64 - frames;
    let total = enc.base.len() as u64 + enc.stream.len() as u64;
    let step = total / points.max(1) as u64;

    let mut live = ProgressiveModel::from_base(&enc.base, rt.clone())?;
    let mut p2u_points = vec![Point { bytes: received, accuracy: score(&mut live)?, label: "base".into() }];
    live.attach(header)?;
    let (mut stage, mut next_mark) = (0, received + step);
    for chunk in &chunks {
        live.apply(chunk)?;
        received += chunk.to_bytes().len() as u64;
        let s = live.status().stage;
        if s > stage || received >= next_mark {
            let label = if s > stage { format!("stage {s}") } else { String::new() };
            stage = s;
            next_mark = received + step;
            p2u_points.push(Point { bytes: received, accuracy: score(&mut live)?, label });
        }
    }

    let mut direct = vec![];
    for bits in [2u8, 3, 4, 8] {
        let min_max = EncodeOptions { clipping: p2u::Clipping::MinMax, ..EncodeOptions::default() };
        let (q, mut m) = base_only(model, name, &info, &min_max, bits, rt)?;
        direct.push(Point { bytes: packed_size(&q, bits), accuracy: score(&mut m)?, label: format!("{bits} bit") });
    }

    println!("accuracy vs bytes received ({} test images), fp32 file {} B:", labels.len(), info.bytes);
    let mut csv = String::from("series,bytes,top1,label\n");
    for (series, pts) in [("p2u", &p2u_points), ("direct", &direct)] {
        for p in pts.iter() {
            println!("  {series:<6} {:>12} B  top-1 {:6.2}%  {}", p.bytes, p.accuracy, p.label);
            let _ = writeln!(csv, "{series},{},{:.4},{}", p.bytes, p.accuracy, p.label);
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let write = |file: String, text: &str| {
        let path = out.join(file);
        std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        println!("  wrote {}", path.display());
        Ok::<_, Error>(())
    };
    write(format!("{name}.curve.csv"), &csv)?;
    write(format!("{name}.curve.svg"), &svg(name, &p2u_points, &direct, info.bytes))?;
    Ok(())
}

/// The base file's size with its codes bit-packed at `bits` (ONNX stores
/// 2- and 3-bit codes as UINT4, so the file itself would not show the
/// difference between 2, 3 and 4 bits).
fn packed_size(enc: &p2u::Encoded, bits: u8) -> u64 {
    let stored_bits = if bits <= 4 { 4 } else { 8 };
    let counts = enc.manifest.tensors.iter().map(|t| t.dims.iter().product::<usize>() as u64);
    let (stored, packed): (u64, u64) =
        counts.map(|n| ((n * stored_bits).div_ceil(8), (n * bits as u64).div_ceil(8))).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    enc.base.len() as u64 - stored + packed
}

/// A line for p2u, dots for direct quantization, a dashed line at the final
/// accuracy; bytes on a linear axis up to the fp32 size.
fn svg(name: &str, p2u: &[Point], direct: &[Point], fp32_bytes: u64) -> String {
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
        "<text x=\"{}\" y=\"{}\" fill=\"#0b5fff\">— p2u (base + stream)</text><text x=\"{}\" y=\"{}\" fill=\"#c2410c\">● direct min/max quantization</text>",
        w - r - 330.0,
        h - b - 30.0,
        w - r - 330.0,
        h - b - 14.0
    );
    s.push_str("</svg>\n");
    s
}
