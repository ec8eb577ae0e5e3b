//! Values as Roboflow's workflow responses carry them (workflows.md §2, serialisation):
//! detections with `parent_id` (and origins for crops in `own` coordinates), images as base64
//! JPEG with `video_metadata` and their lineage.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::value::{Detection, Detections, Image, Val};
use crate::visualize::draw;

/// `val` as JSON; detections in the root image's coordinates unless `own`.
pub fn serialize(val: &Val, own: bool) -> Value {
    match val {
        Val::Json(v) => v.clone(),
        Val::Image(i) => image(i),
        Val::Detections(d) => detections(d, own),
        Val::List(items) => Value::Array(items.iter().map(|v| serialize(v, own)).collect()),
        Val::Dict(items) => Value::Object(items.iter().map(|(k, v)| (k.clone(), serialize(v, own))).collect()),
    }
}

pub fn detections(d: &Detections, own: bool) -> Value {
    let mapped;
    let d = if own {
        d
    } else {
        mapped = d.to_root();
        &mapped
    };
    let size = d.items.first().map(|i| i.image).or(d.image);
    json!({
        "image": {"width": size.map(|s| s.0), "height": size.map(|s| s.1)},
        "predictions": d.items.iter().map(detection).collect::<Vec<_>>(),
    })
}

fn detection(d: &Detection) -> Value {
    let mut o = Map::new();
    o.insert("width".into(), json!(d.width));
    o.insert("height".into(), json!(d.height));
    o.insert("x".into(), json!(d.x));
    o.insert("y".into(), json!(d.y));
    o.insert("confidence".into(), json!(d.confidence));
    o.insert("class_id".into(), json!(d.class_id));
    o.insert("class".into(), json!(d.class_name));
    o.insert("detection_id".into(), json!(d.detection_id));
    o.insert("parent_id".into(), json!(d.parent_id));
    if let Some(points) = &d.points {
        o.insert(
            "points".into(),
            points.iter().map(|(x, y)| json!({"x": x, "y": y})).collect(),
        );
    }
    if let Some(k) = &d.keypoints {
        o.insert("keypoints".into(), Value::Array(k.clone()));
    }
    if let (Some(parent), Some(root)) = (d.parent_origin, d.root_origin) {
        o.insert("parent_origin".into(), parent.json());
        o.insert("root_parent_id".into(), json!(d.root_parent_id));
        o.insert("root_parent_origin".into(), root.json());
    }
    Value::Object(o)
}

pub fn image(i: &Image) -> Value {
    let value = match &i.original {
        Some(b64) => b64.clone(),
        None => match draw::jpeg(i.pixels.width, i.pixels.height, &i.pixels.rgb) {
            Ok(jpeg) => base64::engine::general_purpose::STANDARD.encode(jpeg),
            Err(e) => {
                tracing::warn!("cannot encode a workflow image: {e:#}");
                String::new()
            }
        },
    };
    let mut o = Map::new();
    o.insert("type".into(), json!("base64"));
    o.insert("value".into(), json!(value));
    o.insert(
        "video_metadata".into(),
        json!({
            "video_identifier": i.parent_id,
            "frame_number": 0,
            "frame_timestamp": now(),
            "fps": 30.0,
            "measured_fps": null,
            "comes_from_video_file": null,
            "total_frames": null,
        }),
    );
    if let (Some(parent), Some(root)) = (i.parent_origin, i.root_origin) {
        o.insert("parent_id".into(), json!(i.parent_id));
        o.insert("parent_origin".into(), parent.json());
        o.insert("root_parent_id".into(), json!(i.root_parent_id));
        o.insert("root_parent_origin".into(), root.json());
    }
    Value::Object(o)
}

/// The time now as Python's `datetime.now().isoformat()` writes it (UTC here).
fn now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::now();
        assert_eq!(t.len(), 26, "{t}");
        assert_eq!(&t[10..11], "T");
    }
}
