//! The tasks the server serves, one module each: its request options, its WIT world's host side
//! (bindings and the call into the export), its parameters in the WIT's terms, and its response.
//! What every task shares (decoding, the model, the plugin call, drawing) is the pipeline's,
//! generic over [`Task`]. A new task is one module and one line in [`each`].

pub mod classification;
pub mod custom;
pub mod instance_segmentation;
pub mod keypoint_detection;
pub mod object_detection;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;
use wasmtime::component::{ComponentType, InstancePre, Lift, Lower};
use wasmtime::Store;

use crate::models::ModelDescription;
use crate::plugins::legacy::Legacy;
use crate::plugins::{wit, Bound, CallState, World};
use crate::visualize::{self, Scene};

pub use classification::Classification;
pub use instance_segmentation::InstanceSegmentation;
pub use keypoint_detection::KeypointDetection;
pub use object_detection::ObjectDetection;

/// A task with a WIT world of its own, served at fixed routes for models trained for it.
pub trait Task: Send + Sync + 'static {
    /// Roboflow's name of the task: the models' `task_type`.
    const NAME: &'static str;
    /// The WIT world its plugins implement.
    const WORLD: &'static str;
    /// The `/infer/<route>` segments serving it, the first one canonical.
    const ROUTES: &'static [&'static str];
    /// For the API documentation.
    const SUMMARY: &'static str;
    const DESCRIPTION: &'static str;

    /// The task's own request fields (besides [`CommonOptions`]).
    type Options: DeserializeOwned + Default + ToSchema + Send + 'static;
    /// The request's parameters in the WIT's terms.
    type Params: Send + Sync + 'static;
    /// One image's result, as the plugin returns it.
    type Output: Send + 'static;
    /// One image's response body.
    type Response: Serialize + ToSchema + Send + 'static;

    /// The WIT parameters, from the common options and the task's own; the error is a 400's message.
    fn params(common: &Common, options: &Self::Options) -> Result<Self::Params, String>;

    /// Type-checks a component against the world and keeps its typed `…Pre`.
    fn bind(pre: InstancePre<CallState>) -> anyhow::Result<Bound>;

    /// Instantiates the bound component in `store` and calls the world's export on the images
    /// lent to the store.
    fn invoke(
        bound: &Bound,
        store: &mut Store<CallState>,
        model: &wit::ModelInfo,
        params: &Self::Params,
    ) -> wasmtime::Result<Result<Vec<Self::Output>, wit::PluginError>>;

    /// About how many bytes a result takes (for the plugin's output limit).
    fn output_bytes(output: &Self::Output) -> usize;

    /// One image's response.
    fn respond(output: Self::Output, meta: &Meta<'_>) -> Self::Response;

    /// What to draw for a response.
    fn scene(response: &Self::Response) -> Scene;

    /// The schemas the response's refers to, for the API documentation (derived, but a
    /// generic response does not list its parameter's own schema).
    fn response_schemas(out: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        <Self::Response as ToSchema>::schemas(out);
    }

    /// The response's annotated picture (`visualization`).
    fn visualization(response: &mut Self::Response) -> &mut Option<Visualization>;
}

/// The world's typed `…Pre` a plugin was bound with (`Task::bind`).
pub fn bound_as<'a, P: 'static>(bound: &'a Bound, world: &str) -> wasmtime::Result<&'a P> {
    bound
        .downcast_ref::<P>()
        .ok_or_else(|| wasmtime::format_err!("the plugin is not bound to the {world} world"))
}

/// Calls a task plugin built against the WIT's 0.1.0: its export takes the lent images as
/// records, copied into the plugin.
pub fn invoke_legacy<P, R>(
    legacy: &Legacy,
    store: &mut Store<CallState>,
    model: &wit::ModelInfo,
    params: &P,
) -> wasmtime::Result<Result<R, wit::PluginError>>
where
    P: ComponentType + Lower + ?Sized,
    R: ComponentType + Lift + Send + Sync + 'static,
{
    let images = store.data_mut().image_records();
    let result = legacy.call::<(&wit::ModelInfo, &[wit::v1::Image], &P), (Result<R, wit::PluginError>,)>(
        &mut *store,
        (model, &images, params),
    );
    store.data_mut().return_records(images);
    result.map(|(r,)| r)
}

/// The world of task `T`, for the plugin registry.
pub fn world_of<T: Task>() -> World {
    World {
        name: T::WORLD,
        routes: T::ROUTES,
        block: None,
        bind: T::bind,
    }
}

/// Something done once per task (adding its routes, its API documentation, a lookup table).
pub trait Visitor {
    fn visit<T: Task>(&mut self);
}

/// Every task the server serves.
pub fn each(v: &mut impl Visitor) {
    v.visit::<ObjectDetection>();
    v.visit::<InstanceSegmentation>();
    v.visit::<Classification>();
    v.visit::<KeypointDetection>();
}

/// Every world plugins may implement: the tasks' and the custom-task world.
pub fn worlds() -> crate::plugins::Worlds {
    struct Collect(Vec<World>);
    impl Visitor for Collect {
        fn visit<T: Task>(&mut self) {
            self.0.push(world_of::<T>());
        }
    }
    let mut all = Collect(Vec::new());
    each(&mut all);
    all.0.push(custom::world());
    crate::plugins::Worlds::new(all.0)
}

/// The canonical route of the task named `name` (Roboflow's task name), e.g. `/infer/object_detection`.
pub fn route_of(name: &str) -> Option<String> {
    struct Find<'a>(&'a str, Option<String>);
    impl Visitor for Find<'_> {
        fn visit<T: Task>(&mut self) {
            if T::NAME == self.0 {
                self.1 = Some(format!("/infer/{}", T::ROUTES[0]));
            }
        }
    }
    let mut find = Find(name, None);
    each(&mut find);
    find.1
}

/// The WIT world of the task named `name` (Roboflow's task name).
pub fn world_of_task(name: &str) -> Option<&'static str> {
    struct Find<'a>(&'a str, Option<&'static str>);
    impl Visitor for Find<'_> {
        fn visit<T: Task>(&mut self) {
            if T::NAME == self.0 {
                self.1 = Some(T::WORLD);
            }
        }
    }
    let mut find = Find(name, None);
    each(&mut find);
    find.1
}

/// What a response is made with besides the plugin's result.
pub struct Meta<'a> {
    pub image: ImageSize,
    pub inference_id: &'a str,
    /// Seconds the plugin call took.
    pub time: f64,
    pub model: &'a ModelDescription,
    pub common: &'a Common,
}

/// The request options every task shares, validated, with Roboflow's defaults applied.
#[derive(Clone, Debug)]
pub struct Common {
    pub confidence: f32,
    pub iou_threshold: f32,
    pub class_agnostic_nms: bool,
    pub class_filter: Option<Vec<String>>,
    pub max_detections: u32,
}

pub const DEFAULT_CONFIDENCE: f32 = 0.4;
pub const DEFAULT_IOU: f32 = 0.3;
pub const DEFAULT_MAX_DETECTIONS: u32 = 300;

impl Common {
    /// Checks the values a client may get wrong; the error is a 400's message.
    pub fn new(
        confidence: f32,
        iou_threshold: f32,
        class_agnostic_nms: bool,
        class_filter: Option<Vec<String>>,
        max_detections: u32,
    ) -> Result<Self, String> {
        for (name, value) in [("confidence", confidence), ("iou_threshold", iou_threshold)] {
            if !value.is_finite() {
                return Err(format!("{name} must be a finite number, got {value}"));
            }
        }
        Ok(Self {
            confidence,
            iou_threshold,
            class_agnostic_nms,
            class_filter,
            max_detections,
        })
    }

    /// The detection parameters of the WIT.
    pub fn detection(&self) -> wit::DetectionParams {
        wit::DetectionParams {
            confidence: self.confidence,
            iou_threshold: self.iou_threshold,
            class_agnostic_nms: self.class_agnostic_nms,
            max_detections: self.max_detections,
            class_filter: self.class_filter.clone(),
        }
    }
}

/// A confidence given as a number or as Roboflow's `"best"` / `"default"` (or a number as text).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Confidence {
    Number(f32),
    Named(String),
}

impl Confidence {
    /// `best`/`default` mean the model's recommended threshold; we have none, so the default.
    pub fn value(&self) -> Result<f32, String> {
        match self {
            Confidence::Number(v) => Ok(*v),
            Confidence::Named(s) if s == "best" || s == "default" => Ok(DEFAULT_CONFIDENCE),
            Confidence::Named(s) => s
                .parse()
                .map_err(|_| format!("confidence must be a number, \"best\" or \"default\", got {s:?}")),
        }
    }
}

/// The options of the JSON routes that every task shares (all optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CommonOptions {
    /// Minimum confidence (default 0.4).
    #[serde(default)]
    pub confidence: Option<Confidence>,
    /// NMS IoU threshold (default 0.3).
    #[serde(default)]
    pub iou_threshold: Option<f32>,
    /// NMS across classes (default false).
    #[serde(default)]
    pub class_agnostic_nms: Option<bool>,
    /// Only these class names.
    #[serde(default)]
    pub class_filter: Option<Vec<String>>,
    /// At most this many predictions per image (default 300).
    #[serde(default)]
    pub max_detections: Option<u32>,
    /// Also answer `visualization`: the image with the predictions drawn on it, a base64
    /// JPEG (default false).
    #[serde(default)]
    pub visualize_predictions: Option<bool>,
    /// Visualization: write each detection's class and confidence (default false;
    /// classification always shows its label).
    #[serde(default)]
    pub visualization_labels: Option<bool>,
    /// Visualization: line width in pixels, 1 to 100 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub visualization_stroke_width: Option<i64>,
}

/// Why a request's options cannot be used: a 400 (bad value) or a 422 (bad shape).
#[derive(Debug)]
pub enum BadOptions {
    Invalid(String),
    Unprocessable(String),
}

impl CommonOptions {
    /// The validated options, with Roboflow's defaults.
    pub fn resolve(&self) -> Result<Common, BadOptions> {
        let confidence = self
            .confidence
            .as_ref()
            .map(Confidence::value)
            .transpose()
            .map_err(BadOptions::Unprocessable)?
            .unwrap_or(DEFAULT_CONFIDENCE);
        Common::new(
            confidence,
            self.iou_threshold.unwrap_or(DEFAULT_IOU),
            self.class_agnostic_nms.unwrap_or(false),
            self.class_filter.clone(),
            self.max_detections.unwrap_or(DEFAULT_MAX_DETECTIONS),
        )
        .map_err(BadOptions::Invalid)
    }

    /// How to draw the predictions, when `visualize_predictions` asks for it.
    pub fn visualization(&self) -> Result<Option<visualize::Style>, String> {
        if !self.visualize_predictions.unwrap_or(false) {
            return Ok(None);
        }
        let labels = self.visualization_labels.unwrap_or(false);
        visualize::Style::new(labels, self.visualization_stroke_width, "visualization_stroke_width").map(Some)
    }
}

/// A request field with a fixed set of values. A value outside the set is kept as it came, so
/// that the request is refused with a 400 naming the field rather than a 422 for the whole body.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Choice<T> {
    Known(T),
    Unknown(serde_json::Value),
}

impl<T: DeserializeOwned> Choice<T> {
    /// The value, or the raw one that is not allowed; `ignore_case` also takes a string
    /// value in another case (`BASE64`).
    pub fn resolve(self, ignore_case: bool) -> Result<T, serde_json::Value> {
        match self {
            Choice::Known(v) => Ok(v),
            Choice::Unknown(serde_json::Value::String(s)) if ignore_case => {
                T::deserialize(serde_json::Value::String(s.to_ascii_lowercase()))
                    .map_err(|_| serde_json::Value::String(s))
            }
            Choice::Unknown(raw) => Err(raw),
        }
    }

    /// The value, or why not (naming `field` and the values allowed).
    pub fn get(self, field: &str) -> Result<T, String> {
        self.resolve(false).map_err(|raw| match T::deserialize(&raw) {
            Err(e) => format!("{field}: {e}"),
            Ok(_) => format!("{field}: {raw} is not allowed"),
        })
    }
}

/// An annotated picture (JPEG), sent as base64 as Roboflow does.
#[derive(Debug, Clone)]
pub struct Visualization(pub Vec<u8>);

impl Serialize for Visualization {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

/// A box prediction: what detection, segmentation and keypoint predictions start with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectDetectionPrediction {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub confidence: f64,
    pub class: String,
    pub class_id: u32,
    pub detection_id: String,
}

impl ObjectDetectionPrediction {
    pub fn new(d: wit::Detection) -> Self {
        Self {
            x: f64::from(d.x),
            y: f64::from(d.y),
            width: f64::from(d.width),
            height: f64::from(d.height),
            confidence: f64::from(d.confidence),
            class: d.class_name,
            class_id: d.class_id,
            detection_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The box to draw, with what `detail` adds (a mask, keypoints).
    pub fn object(&self, mask: Option<visualize::MaskShape>, keypoints: Vec<visualize::Keypoint>) -> visualize::Object {
        visualize::Object {
            label: visualize::Label {
                class: self.class.clone(),
                class_id: self.class_id,
                confidence: self.confidence,
            },
            x: self.x,
            y: self.y,
            width: self.width,
            height: self.height,
            mask,
            keypoints,
        }
    }
}

/// The response shape object detection, instance segmentation and keypoint detection share,
/// over their own prediction type.
#[derive(Debug, Serialize, ToSchema)]
pub struct Detections<P> {
    /// Only with `visualize_predictions` (legacy route: `format=image_and_json`): the image
    /// with the predictions drawn on it, a base64 JPEG.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub visualization: Option<Visualization>,
    pub inference_id: String,
    /// Seconds spent on this request's plugin call (pre-processing, model, post-processing).
    pub time: f64,
    pub image: ImageSize,
    pub predictions: Vec<P>,
}

impl<P: ToSchema> Detections<P> {
    /// The schemas the response refers to: the prediction type's and its own references.
    pub fn schemas(out: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        out.push((P::name().into_owned(), <P as utoipa::PartialSchema>::schema()));
        P::schemas(out);
        <Self as ToSchema>::schemas(out);
    }
}

impl<P> Detections<P> {
    pub fn new(meta: &Meta<'_>, predictions: Vec<P>) -> Self {
        Self {
            visualization: None,
            inference_id: meta.inference_id.to_string(),
            time: meta.time,
            image: meta.image,
            predictions,
        }
    }
}

/// The detection parameters' share of the output limit: each detection's numbers and name.
pub fn detections_bytes(detections: &[wit::Detection]) -> usize {
    detections.iter().map(crate::plugins::detection_bytes).sum()
}
