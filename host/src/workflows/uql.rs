//! Roboflow's query language (UQL): operation chains (`ExtractDetectionProperty`,
//! `DetectionsFilter`, `SequenceLength`, …) and statements (`StatementGroup`,
//! `BinaryStatement`, `UnaryStatement`) over operands (`StaticOperand`, `DynamicOperand`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::value::{Detection, Detections, Image, Val};

/// A value as the query language sees it.
#[derive(Clone)]
pub enum Q {
    J(Value),
    Dets(Arc<Detections>),
    Det(Box<Detection>),
    Img(Arc<Image>),
}

/// Named operands (`operations_parameters`, `evaluation_parameters`, expression `data`).
pub type Params = HashMap<String, Q>;

pub fn from_val(v: &Val) -> Q {
    match v {
        Val::Json(j) => Q::J(j.clone()),
        Val::Detections(d) => Q::Dets(d.clone()),
        Val::Image(i) => Q::Img(i.clone()),
        Val::List(items) => Q::J(Value::Array(
            items
                .iter()
                .map(|i| match from_val(i) {
                    Q::J(j) => j,
                    _ => Value::Null,
                })
                .collect(),
        )),
        Val::Dict(_) => Q::J(Value::Null),
    }
}

pub fn to_val(q: Q) -> Val {
    match q {
        Q::J(j) => Val::Json(j),
        Q::Dets(d) => Val::Detections(d),
        Q::Det(d) => Val::Detections(Arc::new(Detections {
            items: vec![*d],
            image: None,
            root: None,
        })),
        Q::Img(i) => Val::Image(i),
    }
}

fn str_field<'a>(op: &'a Value, key: &str) -> Result<&'a str, String> {
    op.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("operation {} needs `{key}`", op_type(op)))
}

fn op_type(op: &Value) -> &str {
    op.get("type").and_then(Value::as_str).unwrap_or("?")
}

/// A detection's property by Roboflow's name.
pub fn detection_property(d: &Detection, name: &str) -> Result<Value, String> {
    let (x0, y0, x1, y1) = d.xyxy();
    Ok(match name {
        "class_name" => json!(d.class_name),
        "class_id" => json!(d.class_id),
        "confidence" => json!(d.confidence),
        "detection_id" => json!(d.detection_id),
        "x_min" => json!(x0),
        "y_min" => json!(y0),
        "x_max" => json!(x1),
        "y_max" => json!(y1),
        "size" => json!(d.width * d.height),
        "center" | "centre" => json!([d.x, d.y]),
        "top_left" => json!([x0, y0]),
        "top_right" => json!([x1, y0]),
        "bottom_left" => json!([x0, y1]),
        "bottom_right" => json!([x1, y1]),
        "width" => json!(d.width),
        "height" => json!(d.height),
        _ => return Err(format!("unknown detection property {name:?}")),
    })
}

/// Applies a chain of operations.
pub fn apply(mut q: Q, ops: &[Value], params: &Params) -> Result<Q, String> {
    for op in ops {
        q = apply_one(q, op, params)?;
    }
    Ok(q)
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
}

fn apply_one(q: Q, op: &Value, params: &Params) -> Result<Q, String> {
    let kind = op_type(op);
    let bad = |what: &str| format!("operation {kind} cannot be applied to {what}");
    Ok(match (kind, q) {
        ("ExtractDetectionProperty", Q::Det(d)) => Q::J(detection_property(&d, str_field(op, "property_name")?)?),
        ("DetectionsPropertyExtract", Q::Dets(d)) => {
            let name = str_field(op, "property_name")?;
            Q::J(Value::Array(
                d.items
                    .iter()
                    .map(|d| detection_property(d, name))
                    .collect::<Result<_, _>>()?,
            ))
        }
        ("DetectionsFilter", Q::Dets(d)) => {
            let statement = op
                .get("filter_operation")
                .ok_or("DetectionsFilter needs filter_operation")?;
            let mut kept = Vec::new();
            for det in &d.items {
                if evaluate(statement, Some(&Q::Det(Box::new(det.clone()))), params)? {
                    kept.push(det.clone());
                }
            }
            Q::Dets(Arc::new(d.with_items(kept)))
        }
        ("SortDetections", Q::Dets(d)) => {
            let mode = op.get("mode").and_then(Value::as_str).unwrap_or("confidence");
            let ascending = op.get("ascending").and_then(Value::as_bool).unwrap_or(true);
            let mut items = d.items.clone();
            let mut keyed = Vec::with_capacity(items.len());
            for det in items.drain(..) {
                let key = number(&detection_property(&det, mode)?).unwrap_or(0.0);
                keyed.push((key, det));
            }
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !ascending {
                keyed.reverse();
            }
            Q::Dets(Arc::new(Detections {
                items: keyed.into_iter().map(|(_, d)| d).collect(),
                ..(*d).clone()
            }))
        }
        ("DetectionsSelection", Q::Dets(d)) => {
            let mode = op.get("mode").and_then(Value::as_str).unwrap_or("all");
            let by = |f: &dyn Fn(&Detection) -> f64, max: bool| {
                let best = d.items.iter().max_by(|a, b| {
                    let (a, b) = (f(a), f(b));
                    if max {
                        a.total_cmp(&b)
                    } else {
                        b.total_cmp(&a)
                    }
                });
                best.cloned().into_iter().collect::<Vec<_>>()
            };
            let items = match mode {
                "all" => d.items.clone(),
                "first" => d.items.first().cloned().into_iter().collect(),
                "last" => d.items.last().cloned().into_iter().collect(),
                "left_most" => by(&|d| d.xyxy().0, false),
                "right_most" => by(&|d| d.xyxy().2, true),
                "top_confidence" => by(&|d| d.confidence, true),
                other => return Err(format!("DetectionsSelection: unknown mode {other:?}")),
            };
            Q::Dets(Arc::new(d.with_items(items)))
        }
        ("DetectionsOffset", Q::Dets(d)) => {
            let ow = op.get("offset_width").and_then(number).unwrap_or(0.0);
            let oh = op.get("offset_height").and_then(number).unwrap_or(0.0);
            let percent = op.get("units").and_then(Value::as_str) == Some("Percent (%)");
            let items = d
                .items
                .iter()
                .map(|det| {
                    let (dw, dh) = if percent {
                        (det.width * ow / 100.0, det.height * oh / 100.0)
                    } else {
                        (ow, oh)
                    };
                    let (w, h) = (f64::from(det.image.0), f64::from(det.image.1));
                    let (x0, y0, x1, y1) = det.xyxy();
                    let (x0, y0) = ((x0 - dw / 2.0).max(0.0), (y0 - dh / 2.0).max(0.0));
                    let (x1, y1) = ((x1 + dw / 2.0).min(w), (y1 + dh / 2.0).min(h));
                    Detection {
                        x: (x0 + x1) / 2.0,
                        y: (y0 + y1) / 2.0,
                        width: x1 - x0,
                        height: y1 - y0,
                        detection_id: uuid::Uuid::new_v4().to_string(),
                        ..det.clone()
                    }
                })
                .collect();
            Q::Dets(Arc::new(Detections { items, ..(*d).clone() }))
        }
        ("DetectionsRename", Q::Dets(d)) => {
            let map = op
                .get("class_map")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let strict = op.get("strict").and_then(Value::as_bool).unwrap_or(false);
            let mut items = Vec::new();
            for det in &d.items {
                match map.get(&det.class_name).and_then(Value::as_str) {
                    Some(to) => items.push(Detection {
                        class_name: to.into(),
                        ..det.clone()
                    }),
                    None if strict => {
                        return Err(format!("DetectionsRename: class {} not in class_map", det.class_name))
                    }
                    None => items.push(det.clone()),
                }
            }
            Q::Dets(Arc::new(Detections { items, ..(*d).clone() }))
        }
        ("SequenceLength", q) => Q::J(json!(match &q {
            Q::Dets(d) => d.items.len(),
            Q::J(Value::Array(a)) => a.len(),
            Q::J(Value::String(s)) => s.chars().count(),
            Q::J(Value::Object(o)) => o.len(),
            _ => return Err(bad("this value")),
        })),
        ("SequenceAggregate", Q::J(Value::Array(a))) => {
            let mode = op.get("mode").and_then(Value::as_str).unwrap_or("first");
            let nums = || a.iter().filter_map(number);
            Q::J(match mode {
                "first" => a.first().cloned().unwrap_or(Value::Null),
                "last" => a.last().cloned().unwrap_or(Value::Null),
                "min" => nums().reduce(f64::min).map_or(Value::Null, Value::from),
                "max" => nums().reduce(f64::max).map_or(Value::Null, Value::from),
                "sum" => json!(nums().sum::<f64>()),
                "average" => {
                    let n: Vec<f64> = nums().collect();
                    if n.is_empty() {
                        Value::Null
                    } else {
                        json!(n.iter().sum::<f64>() / n.len() as f64)
                    }
                }
                other => return Err(format!("SequenceAggregate: unknown mode {other:?}")),
            })
        }
        ("ToNumber", Q::J(v)) => {
            let n = match &v {
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("ToNumber: {s:?} is not a number"))?,
                other => number(other).ok_or_else(|| bad("a non-number"))?,
            };
            let int = op.get("cast_to").and_then(Value::as_str) == Some("int");
            Q::J(if int { json!(n.trunc() as i64) } else { json!(n) })
        }
        ("ToString", Q::J(v)) => Q::J(json!(match v {
            Value::String(s) => s,
            other => other.to_string(),
        })),
        ("ToBoolean", Q::J(v)) => Q::J(json!(match v {
            Value::Bool(b) => b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            Value::Null => false,
            other => number(&other).is_some_and(|n| n != 0.0),
        })),
        ("StringToUpperCase", Q::J(Value::String(s))) => Q::J(json!(s.to_uppercase())),
        ("StringToLowerCase", Q::J(Value::String(s))) => Q::J(json!(s.to_lowercase())),
        ("Multiply" | "Divide" | "Plus" | "Minus", Q::J(v)) => {
            let a = number(&v).ok_or_else(|| bad("a non-number"))?;
            let b = op
                .get("other")
                .and_then(number)
                .ok_or_else(|| format!("{kind} needs a number `other`"))?;
            Q::J(json!(match kind {
                "Multiply" => a * b,
                "Divide" => a / b,
                "Plus" => a + b,
                _ => a - b,
            }))
        }
        ("LookupTable", Q::J(v)) => {
            let table = op
                .get("lookup_table")
                .and_then(Value::as_object)
                .ok_or("LookupTable needs lookup_table")?;
            let key = match &v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Q::J(table.get(&key).cloned().unwrap_or(Value::Null))
        }
        ("ClassificationPropertyExtract", Q::J(v)) => {
            Q::J(classification_property(&v, str_field(op, "property_name")?)?)
        }
        ("ExtractImageProperty", Q::Img(img)) => {
            let (w, h) = img.size();
            Q::J(match str_field(op, "property_name")? {
                "width" => json!(w),
                "height" => json!(h),
                "size" => json!(u64::from(w) * u64::from(h)),
                "aspect_ratio" => json!(if h == 0 { 0.0 } else { f64::from(w) / f64::from(h) }),
                other => return Err(format!("unknown image property {other:?}")),
            })
        }
        (_, Q::J(Value::Null)) if kind != "SequenceLength" => Q::J(Value::Null),
        (
            "ExtractDetectionProperty"
            | "DetectionsPropertyExtract"
            | "DetectionsFilter"
            | "SortDetections"
            | "DetectionsSelection"
            | "DetectionsOffset"
            | "DetectionsRename"
            | "SequenceAggregate"
            | "ToNumber"
            | "ToString"
            | "ToBoolean"
            | "StringToUpperCase"
            | "StringToLowerCase"
            | "LookupTable"
            | "ClassificationPropertyExtract"
            | "ExtractImageProperty",
            _,
        ) => return Err(bad("this value")),
        _ => return Err(format!("operation {kind:?} is not supported")),
    })
}

/// A classification prediction's property (single- or multi-label).
fn classification_property(v: &Value, name: &str) -> Result<Value, String> {
    let predictions = v.get("predictions");
    // Single-label: a list sorted by confidence; multi-label: a dict of class → {confidence}.
    let pairs: Vec<(String, f64)> = match predictions {
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| {
                (
                    p.get("class").and_then(Value::as_str).unwrap_or_default().to_string(),
                    p.get("confidence").and_then(Value::as_f64).unwrap_or(0.0),
                )
            })
            .collect(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, p)| (k.clone(), p.get("confidence").and_then(Value::as_f64).unwrap_or(0.0)))
            .collect(),
        _ => Vec::new(),
    };
    let top = pairs.iter().max_by(|a, b| a.1.total_cmp(&b.1));
    Ok(match name {
        "top_class" => v
            .get("top")
            .cloned()
            .unwrap_or_else(|| top.map_or(Value::Null, |t| json!(t.0))),
        "top_class_confidence" | "top_class_confidence_single" => v
            .get("confidence")
            .cloned()
            .unwrap_or_else(|| top.map_or(Value::Null, |t| json!(t.1))),
        "all_classes" => json!(pairs.iter().map(|p| &p.0).collect::<Vec<_>>()),
        "all_confidences" => json!(pairs.iter().map(|p| p.1).collect::<Vec<_>>()),
        other => return Err(format!("unknown classification property {other:?}")),
    })
}

/// An operand's value: a constant, the subject (`_`) or a named parameter, through its
/// operations.
fn operand(o: &Value, subject: Option<&Q>, params: &Params) -> Result<Q, String> {
    let ops = o
        .get("operations")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let base = match o.get("type").and_then(Value::as_str) {
        Some("StaticOperand") => Q::J(o.get("value").cloned().unwrap_or(Value::Null)),
        Some("DynamicOperand") => {
            let name = o.get("operand_name").and_then(Value::as_str).unwrap_or("_");
            match (name, subject) {
                ("_", Some(s)) => s.clone(),
                _ => params
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("operand {name:?} is not defined"))?,
            }
        }
        other => return Err(format!("unknown operand type {other:?}")),
    };
    apply(base, ops, params)
}

fn json_of(q: &Q) -> Value {
    match q {
        Q::J(v) => v.clone(),
        Q::Dets(d) => json!(d.items.len()),
        _ => Value::Null,
    }
}

fn seq(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// Evaluates a statement (`StatementGroup`, `BinaryStatement`, `UnaryStatement`).
pub fn evaluate(s: &Value, subject: Option<&Q>, params: &Params) -> Result<bool, String> {
    let negate = s.get("negate").and_then(Value::as_bool).unwrap_or(false);
    let result = match s.get("type").and_then(Value::as_str) {
        Some("StatementGroup") => {
            let and = s.get("operator").and_then(Value::as_str) == Some("and");
            let statements = s
                .get("statements")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut acc = and;
            for st in &statements {
                let v = evaluate(st, subject, params)?;
                if and && !v {
                    acc = false;
                    break;
                }
                if !and && v {
                    acc = true;
                    break;
                }
            }
            acc
        }
        Some("BinaryStatement") => {
            let left = json_of(&operand(
                s.get("left_operand").ok_or("left_operand missing")?,
                subject,
                params,
            )?);
            let right = json_of(&operand(
                s.get("right_operand").ok_or("right_operand missing")?,
                subject,
                params,
            )?);
            let cmp = s
                .get("comparator")
                .and_then(|c| c.get("type"))
                .and_then(Value::as_str)
                .ok_or("comparator missing")?;
            compare(cmp, &left, &right)?
        }
        Some("UnaryStatement") => {
            let v = operand(s.get("operand").ok_or("operand missing")?, subject, params)?;
            let op = s
                .get("operator")
                .and_then(|c| c.get("type"))
                .and_then(Value::as_str)
                .ok_or("operator missing")?;
            let empty = match &v {
                Q::Dets(d) => d.items.is_empty(),
                Q::J(Value::Array(a)) => a.is_empty(),
                Q::J(Value::String(t)) => t.is_empty(),
                Q::J(Value::Object(o)) => o.is_empty(),
                Q::J(Value::Null) => true,
                _ => false,
            };
            let value = json_of(&v);
            match op {
                "Exists" => !value.is_null() || !matches!(v, Q::J(_)),
                "DoesNotExist" => value.is_null() && matches!(v, Q::J(_)),
                "(Boolean) is True" => value == Value::Bool(true),
                "(Boolean) is False" => value == Value::Bool(false),
                "(Sequence) is empty" => empty,
                "(Sequence) is not empty" => !empty,
                other => return Err(format!("unknown unary operator {other:?}")),
            }
        }
        other => return Err(format!("unknown statement type {other:?}")),
    };
    Ok(result != negate)
}

fn compare(cmp: &str, l: &Value, r: &Value) -> Result<bool, String> {
    let nums = || -> Result<(f64, f64), String> {
        match (number(l), number(r)) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(format!("comparator {cmp:?} needs numbers, got {l} and {r}")),
        }
    };
    let strs = || -> Result<(&str, &str), String> {
        match (l.as_str(), r.as_str()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(format!("comparator {cmp:?} needs strings, got {l} and {r}")),
        }
    };
    let loose_eq = |a: &Value, b: &Value| match (number(a), number(b)) {
        (Some(x), Some(y)) if !a.is_boolean() && !b.is_boolean() => x == y,
        _ => a == b,
    };
    Ok(match cmp {
        "==" | "(Number) ==" => loose_eq(l, r),
        "!=" | "(Number) !=" => !loose_eq(l, r),
        "(Number) >" => nums().map(|(a, b)| a > b)?,
        "(Number) >=" => nums().map(|(a, b)| a >= b)?,
        "(Number) <" => nums().map(|(a, b)| a < b)?,
        "(Number) <=" => nums().map(|(a, b)| a <= b)?,
        "(String) startsWith" => strs().map(|(a, b)| a.starts_with(b))?,
        "(String) endsWith" => strs().map(|(a, b)| a.ends_with(b))?,
        "(String) contains" => strs().map(|(a, b)| a.contains(b))?,
        "in (Sequence)" => match r {
            Value::String(s) => l.as_str().is_some_and(|l| s.contains(l)),
            _ => seq(r).iter().any(|x| loose_eq(l, x)),
        },
        "any in (Sequence)" => seq(l).iter().any(|a| seq(r).iter().any(|b| loose_eq(a, b))),
        "all in (Sequence)" => seq(l).iter().all(|a| seq(r).iter().any(|b| loose_eq(a, b))),
        other => return Err(format!("comparator {other:?} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_operations() {
        let p = Params::from([("n".to_string(), Q::J(json!(3)))]);
        let st = json!({"type": "StatementGroup", "operator": "and", "statements": [
            {"type": "BinaryStatement", "left_operand": {"type": "DynamicOperand", "operand_name": "n"},
             "comparator": {"type": "(Number) >="}, "right_operand": {"type": "StaticOperand", "value": 3}},
            {"type": "UnaryStatement", "operand": {"type": "StaticOperand", "value": [1]},
             "operator": {"type": "(Sequence) is not empty"}}]});
        assert!(evaluate(&st, None, &p).unwrap());
        assert!(compare("in (Sequence)", &json!("a"), &json!(["b", "a"])).unwrap());
        let q = apply(Q::J(json!(["x", "y"])), &[json!({"type": "SequenceLength"})], &p).unwrap();
        assert_eq!(json_of(&q), json!(2));
        assert!(apply(Q::J(json!(1)), &[json!({"type": "NoSuchOp"})], &p).is_err());
    }
}
