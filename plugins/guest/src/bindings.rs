//! The guest side of the WIT worlds (`wit/inference.wit`), generated once for every plugin, ours
//! and users' alike: one module per world, all sharing one set of `inference:plugins/types` and
//! `wasi:nn` types, so the glue in [`crate::glue`] serves every world. A plugin implements its
//! world's `Guest` trait and exports it with the world's macro, e.g.
//! `inference_guest::export_object_detection!(MyPlugin);`. A custom workflow block implements the
//! `workflow-block` world the same way (`inference_guest::export_workflow_block!(MyBlock);`).

#![allow(missing_docs)]

/// The object-detection world (`detect`). Its modules hold the shared types: [`types`](crate::wit).
pub mod object_detection {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "object-detection",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_object_detection",
        default_bindings_module: "inference_guest::bindings::object_detection",
    });
}

/// A world whose shared types are the object-detection world's (so one set serves every world).
macro_rules! world {
    ($(#[$doc:meta])* $module:ident, $world:literal, $export:literal, $path:literal) => {
        $(#[$doc])*
        pub mod $module {
            wit_bindgen::generate!({
                path: "../../wit",
                world: $world,
                with: {
                    "inference:plugins/types@0.2.0": crate::bindings::object_detection::inference::plugins::types,
                    "inference:plugins/imaging@0.2.0": crate::bindings::object_detection::inference::plugins::imaging,
                    "wasi:nn/tensor@0.2.0-rc-2024-10-28": crate::bindings::object_detection::wasi::nn::tensor,
                    "wasi:nn/graph@0.2.0-rc-2024-10-28": crate::bindings::object_detection::wasi::nn::graph,
                    "wasi:nn/inference@0.2.0-rc-2024-10-28": crate::bindings::object_detection::wasi::nn::inference,
                    "wasi:nn/errors@0.2.0-rc-2024-10-28": crate::bindings::object_detection::wasi::nn::errors,
                },
                pub_export_macro: true,
                export_macro_name: $export,
                default_bindings_module: $path,
            });
        }
    };
}

world!(
    /// The classification world (`classify`).
    classification, "classification", "export_classification", "inference_guest::bindings::classification"
);
world!(
    /// The instance-segmentation world (`segment`).
    instance_segmentation, "instance-segmentation", "export_instance_segmentation",
    "inference_guest::bindings::instance_segmentation"
);
world!(
    /// The keypoint-detection world (`detect-keypoints`).
    keypoint_detection, "keypoint-detection", "export_keypoint_detection",
    "inference_guest::bindings::keypoint_detection"
);
world!(
    /// The custom-task world (`run`: any images in, any JSON out).
    custom_task, "custom-task", "export_custom_task", "inference_guest::bindings::custom_task"
);

/// The workflow-block world (`run`: a custom workflow block's items in, their outputs out). It
/// imports no `wasi:nn`, so only the shared types are mapped.
pub mod workflow_block {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "workflow-block",
        with: {
            "inference:plugins/types@0.2.0": crate::bindings::object_detection::inference::plugins::types,
        },
        pub_export_macro: true,
        export_macro_name: "export_workflow_block",
        default_bindings_module: "inference_guest::bindings::workflow_block",
    });
}
