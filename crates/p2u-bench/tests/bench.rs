//! The benchmark harness on real data: `p2u-bench --curve` draws accuracy
//! against bytes received for the p2u stream, p2u bases and direct
//! quantization (resnet_fmnist on Fashion-MNIST).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::*;

fn bench(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2u-bench")).args(args.iter().map(|a| a.as_ref())).output().expect("p2u-bench runs")
}

#[test]
fn help_and_usage_errors() {
    let o = bench(&[&"--help"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Usage: p2u-bench"), "{}", output_text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--curve"), "{}", output_text(&o));
    let o = bench(&[&"--calibration", &"x.npy"]);
    assert!(!o.status.success() && output_text(&o).contains("--calibration-items"), "{}", output_text(&o));
}

#[test]
fn curve_of_resnet_on_fashion_mnist() {
    let out = scratch("curve");
    let models = shared_models();
    require(models.join("resnet_fmnist.onnx"));
    let o =
        bench(&[&"--models", &models, &"--only", &"resnet_fmnist", &"--eval-limit", &"300", &"--curve", &out, &"--points", &"4"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let csv = std::fs::read_to_string(out.join("resnet_fmnist.curve.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let p2u_rows: Vec<_> = rows.iter().filter(|r| r[0] == "p2u").collect();
    let direct: Vec<_> = rows.iter().filter(|r| r[0] == "direct").collect();
    let bases: Vec<_> = rows.iter().filter(|r| r[0] == "p2u-base").collect();
    assert!(p2u_rows.len() >= 5, "{csv}");
    assert_eq!(direct.iter().map(|r| r[3]).collect::<Vec<_>>(), ["2 bit", "3 bit", "4 bit", "5 bit", "6 bit", "7 bit", "8 bit"]);
    assert_eq!(bases.iter().map(|r| r[3]).collect::<Vec<_>>(), ["2 bit", "3 bit", "4 bit"]);
    let bytes = |r: &&&Vec<&str>| r[1].parse::<u64>().unwrap();
    assert!(p2u_rows.windows(2).all(|w| bytes(&&w[0]) < bytes(&&w[1])), "bytes grow along the stream");
    assert!(direct.windows(2).all(|w| bytes(&&w[0]) < bytes(&&w[1])), "direct bytes grow with the bits");
    assert_eq!(p2u_rows.last().unwrap()[3], "stage 3");
    let acc = |r: &&Vec<&str>| r[2].parse::<f64>().unwrap();
    assert!(acc(p2u_rows.last().unwrap()) > 85.0, "{csv}");
    // calibrated (GPTQ) 2-bit base against direct 2-bit min/max on the same images
    assert!(acc(&bases[0]) > acc(&direct[0]) + 20.0, "{csv}");
    assert!(output_text(&o).contains("held out for calibration") && output_text(&o).contains("best p2u within it"), "{}", output_text(&o));
    let svg = std::fs::read_to_string(out.join("resnet_fmnist.curve.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{svg}");
    assert_eq!(svg.matches("<circle").count(), p2u_rows.len() + direct.len(), "{svg}");
    assert_eq!(svg.matches("<rect x=").count(), bases.len(), "{svg}");
}
