//! Writes a tiny text transformer (two int64 inputs, see `model.rs`) as an
//! ONNX file, ready for `p2u encode`:
//!
//! ```text
//! cargo run --release --example tiny_transformer -- text.onnx
//! p2u encode text.onnx -o text
//! ```
//! Serve it with `load('text/text.json')` and run it with named feeds:
//! `model.run({ input_ids: BigInt64Array, attention_mask: BigInt64Array })`.

mod model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: tiny_transformer OUT.onnx");
        std::process::exit(2);
    };
    std::fs::write(&out, p2u_encode::onnx::encode_model(&model::tiny_transformer()))?;
    println!("{out}: tiny text transformer, inputs input_ids and attention_mask (int64, [batch, {}])", model::SEQUENCE);
    Ok(())
}
