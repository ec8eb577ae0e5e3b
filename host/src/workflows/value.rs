//! What flows between steps: images with their lineage, detections in the coordinates of the
//! image they were made on, and JSON for everything else.

use std::sync::Arc;

use serde_json::Value;

use crate::input::RgbImage;

/// Where an image lies in its parent (or root) image: its top-left corner there, and the
/// parent's size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Origin {
    pub offset_x: i64,
    pub offset_y: i64,
    pub width: u32,
    pub height: u32,
}

impl Origin {
    pub fn json(&self) -> Value {
        serde_json::json!({"offset_x": self.offset_x, "offset_y": self.offset_y,
            "width": self.width, "height": self.height})
    }
}

/// An image in a workflow: an input, a crop or slice of one, or a drawing.
pub struct Image {
    pub pixels: RgbImage,
    pub parent_id: String,
    /// Set for crops and slices: where they lie in their parent and in the root input.
    pub parent_origin: Option<Origin>,
    pub root_parent_id: String,
    pub root_origin: Option<Origin>,
    /// An input's base64 as it came (echoed for `$inputs.image`).
    pub original: Option<String>,
}

impl Image {
    pub fn size(&self) -> (u32, u32) {
        (self.pixels.width, self.pixels.height)
    }

    /// A new picture of the same lineage (a drawing on this image).
    pub fn derived(&self, pixels: RgbImage) -> Image {
        Image {
            pixels,
            parent_id: self.parent_id.clone(),
            parent_origin: self.parent_origin,
            root_parent_id: self.root_parent_id.clone(),
            root_origin: self.root_origin,
            original: None,
        }
    }

    /// Where a part of this image at `origin` lies in the root image.
    pub fn root_origin_of(&self, origin: Origin) -> Origin {
        match self.root_origin {
            None => origin,
            Some(r) => Origin {
                offset_x: r.offset_x + origin.offset_x,
                offset_y: r.offset_y + origin.offset_y,
                ..r
            },
        }
    }

    /// Copies the pixels (plugins take their images by value).
    pub fn pixels_copy(&self) -> RgbImage {
        RgbImage {
            width: self.pixels.width,
            height: self.pixels.height,
            rgb: self.pixels.rgb.clone(),
        }
    }
}

/// One detection, in the coordinates of the image it was made on.
#[derive(Clone, Debug)]
pub struct Detection {
    /// Box centre and size.
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub confidence: f64,
    pub class_id: i64,
    pub class_name: String,
    pub detection_id: String,
    pub parent_id: String,
    /// The size of the image these coordinates are in.
    pub image: (u32, u32),
    pub parent_origin: Option<Origin>,
    pub root_parent_id: String,
    pub root_origin: Option<Origin>,
    /// A segmentation's outline.
    pub points: Option<Vec<(f64, f64)>>,
    /// A pose's keypoints (`{class_id, class, confidence, x, y}` objects).
    pub keypoints: Option<Vec<Value>>,
}

impl Detection {
    pub fn xyxy(&self) -> (f64, f64, f64, f64) {
        (
            self.x - self.width / 2.0,
            self.y - self.height / 2.0,
            self.x + self.width / 2.0,
            self.y + self.height / 2.0,
        )
    }

    /// This detection moved into its root image's coordinates.
    pub fn to_root(&self) -> Detection {
        let Some(origin) = self.root_origin else {
            return self.clone();
        };
        let (dx, dy) = (origin.offset_x as f64, origin.offset_y as f64);
        Detection {
            x: self.x + dx,
            y: self.y + dy,
            parent_id: self.root_parent_id.clone(),
            image: (origin.width, origin.height),
            parent_origin: None,
            root_origin: None,
            points: self
                .points
                .as_ref()
                .map(|p| p.iter().map(|(x, y)| (x + dx, y + dy)).collect()),
            keypoints: self.keypoints.as_ref().map(|k| shift_keypoints(k, dx, dy)),
            ..self.clone()
        }
    }
}

fn shift_keypoints(keypoints: &[Value], dx: f64, dy: f64) -> Vec<Value> {
    keypoints
        .iter()
        .map(|k| {
            let mut k = k.clone();
            if let Some(o) = k.as_object_mut() {
                for (key, d) in [("x", dx), ("y", dy)] {
                    if let Some(v) = o.get(key).and_then(Value::as_f64) {
                        o.insert(key.into(), Value::from(v + d));
                    }
                }
            }
            k
        })
        .collect()
}

/// A set of detections on one image.
#[derive(Clone, Debug, Default)]
pub struct Detections {
    pub items: Vec<Detection>,
    /// The image's size when it is known without a detection (Roboflow's `metadata`): set by a
    /// model on an input image; `None` after a filter, and for a model on a crop.
    pub image: Option<(u32, u32)>,
    /// For detections on a crop: the root image's id and where the crop lies in it, so that
    /// even an empty set maps to the root image's size.
    pub root: Option<(String, Origin)>,
}

impl Detections {
    /// The same detections with only `items` kept.
    pub fn with_items(&self, items: Vec<Detection>) -> Detections {
        Detections {
            items,
            image: None,
            root: self.root.clone(),
        }
    }

    /// In the root image's coordinates.
    pub fn to_root(&self) -> Detections {
        match &self.root {
            None => self.clone(),
            Some((_, origin)) => Detections {
                items: self.items.iter().map(Detection::to_root).collect(),
                image: Some((origin.width, origin.height)),
                root: None,
            },
        }
    }
}

/// A value in a workflow.
#[derive(Clone)]
pub enum Val {
    Json(Value),
    Image(Arc<Image>),
    Detections(Arc<Detections>),
    /// A list of values (a nested dimension handed to one step, a list of selectors).
    List(Vec<Val>),
    /// A dict of selectors' values.
    Dict(Vec<(String, Val)>),
}

impl Val {
    pub const NULL: Val = Val::Json(Value::Null);

    pub fn json(&self) -> Option<&Value> {
        match self {
            Val::Json(v) => Some(v),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Val::Json(_) => "a value",
            Val::Image(_) => "an image",
            Val::Detections(_) => "detections",
            Val::List(_) => "a list",
            Val::Dict(_) => "a dict",
        }
    }
}
