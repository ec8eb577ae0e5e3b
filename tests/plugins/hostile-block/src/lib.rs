//! A hostile workflow block for the sandbox tests. Its `mode` field picks the misbehaviour, so one
//! component covers every case: `loop` spins forever, `alloc` allocates without bound, `panic`
//! panics, `big` returns more than its output limit, `wrong-kind` returns detections for its
//! string output, `missing` returns no output, `read-file` looks for a host file, `invalid`
//! fails with `invalid-input`; anything else (`ok`) answers `"ok"`.

use inference_guest as guest;

use guest::block::{self, Detections, Guest, Value, Values};
use guest::wit::{ErrorKind, PluginError};

struct Block;

fn fail(kind: ErrorKind, message: String) -> PluginError {
    PluginError { kind, message }
}

fn result(value: Value) -> Values {
    vec![("result".to_string(), value)]
}

impl Guest for Block {
    fn run(items: Vec<Values>) -> Result<Vec<Values>, PluginError> {
        block::each(items, |item| {
            let mode = block::text(block::field(&item, "mode")).unwrap_or("ok").to_string();
            match mode.as_str() {
                "loop" => {
                    let mut x: u64 = 0;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                "alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 16 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "panic" => panic!("hostile-block was asked to panic"),
                "big" => Ok(result(Value::Text("x".repeat(1 << 20)))),
                "wrong-kind" => Ok(result(Value::Detections(Detections {
                    image_width: 1,
                    image_height: 1,
                    items: Vec::new(),
                }))),
                "missing" => Ok(Vec::new()),
                "read-file" => match std::fs::read_to_string("/etc/passwd") {
                    Ok(text) => Ok(result(Value::Text(text))),
                    Err(e) => Err(fail(ErrorKind::InferenceFailed, format!("file read refused: {e}"))),
                },
                "invalid" => Err(fail(ErrorKind::InvalidInput, "mode `invalid` is invalid".into())),
                _ => Ok(result(Value::Text("ok".into()))),
            }
        })
    }
}

guest::export_workflow_block!(Block);
