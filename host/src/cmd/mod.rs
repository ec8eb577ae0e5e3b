//! The commands besides `server start --foreground` (which is `serve`): managing background
//! servers (`daemon`), the model cache (`models`), tenants files (`tenants`), benchmarks
//! (`bench`) and the `infer` client. Their arguments are `cli`'s.

pub mod bench;
pub mod bench_rfdetr;
pub mod daemon;
pub mod infer;
pub mod models;
pub mod tenants;
