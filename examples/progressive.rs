//! Progressive delivery, natively: the base "arrives" over a simulated link,
//! the model answers at once, and the answers sharpen as the stream lands.
//!
//! ```text
//! cargo run --release --example progressive -- DIR IMAGES.bin CLASSES.txt [MBIT_PER_S]
//! ```
//! `DIR` is an encoded MobileNetV2-ImageNet (`p2u encode … -o DIR`),
//! `IMAGES.bin` holds 224×224×3 uint8 images (../shared/models layout).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use p2u::format::manifest::Manifest;
use p2u::{ProgressiveModel, RuntimeOptions};
use tract_onnx::prelude::Tensor;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: progressive DIR IMAGES.bin CLASSES.txt [MBIT_PER_S]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let images = std::fs::read(&args[1])?;
    let classes: Vec<String> = std::fs::read_to_string(&args[2])?.lines().map(str::to_owned).collect();
    let mbps: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10.0);
    let bytes_per_s = mbps * 1e6 / 8.0;

    let manifest_path = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .ok_or("no manifest in DIR")?;
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(manifest_path)?)?;
    let base = std::fs::read(dir.join(&manifest.base.file))?;
    let stream = std::fs::read(dir.join(&manifest.stream.file))?;

    let n = images.len() / (224 * 224 * 3);
    let batch: Vec<f32> = (0..n)
        .flat_map(|i| {
            let im = &images[i * 150_528..(i + 1) * 150_528];
            (0..3).flat_map(move |c| (0..224 * 224).map(move |p| (im[p * 3 + c] as f32 / 255.0 - MEAN[c]) / STD[c]))
        })
        .collect();
    let x = Tensor::from_shape(&[n, 3, 224, 224], &batch)?;

    println!(
        "link {mbps} Mbit/s; fp32 model {:.1} MB would take {:.1} s to arrive",
        manifest.original.bytes as f64 / 1e6,
        manifest.original.bytes as f64 / bytes_per_s
    );
    let start = Instant::now();
    let arrive = |bytes: usize| {
        let due = Duration::from_secs_f64(bytes as f64 / bytes_per_s);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    };
    arrive(base.len());
    let mut model = ProgressiveModel::from_base(&base, RuntimeOptions { input_shapes: vec![vec![n, 3, 224, 224]], ..Default::default() })?;
    let report = |model: &mut ProgressiveModel| -> Result<(), Box<dyn std::error::Error>> {
        let out = model.run(vec![x.clone()])?;
        let logits: Vec<f32> = out.outputs[0].to_plain_array_view::<f32>()?.iter().copied().collect();
        let top: Vec<&str> = logits
            .chunks(1000)
            .map(|r| r.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
            .map(|i| classes.get(i).map(String::as_str).unwrap_or("?"))
            .collect();
        let s = out.status;
        let label = match (s.exact, s.stages) {
            (true, _) => "exact".to_string(),
            (false, 1) => "preview, base".to_string(),
            (false, n) => format!("preview, stage {}/{}", s.stage, n - 1),
        };
        println!("t={:5.2}s  [{label}]  {}", start.elapsed().as_secs_f64(), top.join(" | "));
        Ok(())
    };
    report(&mut model)?;
    let mut received = base.len();
    let mut stage = 0;
    for slice in stream.chunks(64 * 1024) {
        received += slice.len();
        arrive(received);
        model.feed(slice)?;
        if model.status().stage > stage {
            stage = model.status().stage;
            report(&mut model)?;
        }
    }
    model.finish_stream()?;
    Ok(())
}
