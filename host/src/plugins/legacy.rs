//! Components built against the WIT's 0.1.0, whose images are records carrying their pixels
//! (`wit/0.1.0/`): still run, through their export's name and the 0.2.0 Rust types (the component
//! model checks records and variants by their structure, and the other types did not change), with
//! the pixels copied into the plugin as before.

use anyhow::{bail, Result};
use wasmtime::component::{ComponentExportIndex, ComponentNamedList, InstancePre, Lift, Lower};
use wasmtime::Store;

use super::runtime::CallState;
use super::world::Bound;

/// The WIT package version these components were built against.
pub const WIT_VERSION: &str = "0.1.0";

/// A 0.1.0 component and its world's export.
pub struct Legacy {
    pre: InstancePre<CallState>,
    func: ComponentExportIndex,
}

impl Legacy {
    /// Binds `pre` by its export `interface` (e.g. `inference:plugins/detection@0.1.0`) and that
    /// interface's function `func`; their types are checked when the function is first called.
    fn bind(pre: InstancePre<CallState>, interface: &str, func: &str) -> Result<Self> {
        let component = pre.component();
        let Some(exported) = component.get_export_index(None, interface) else {
            bail!("the component exports no {interface}");
        };
        let Some(func) = component.get_export_index(Some(&exported), func) else {
            bail!("the component's {interface} has no function {func}");
        };
        Ok(Self { pre, func })
    }

    /// Binds `pre` as a 0.1.0 component where it exports `interface` (by the name of that
    /// interface's function `func`), any other with the current world's bindings (`bind`, which
    /// type-checks it against the current WIT). Task and block worlds alike bind through here.
    pub fn or_bind(
        pre: InstancePre<CallState>,
        interface: &str,
        func: &str,
        bind: impl FnOnce(InstancePre<CallState>) -> Result<Bound>,
    ) -> Result<Bound> {
        if pre.component().get_export_index(None, interface).is_some() {
            return Ok(Box::new(Self::bind(pre, interface, func)?));
        }
        bind(pre)
    }

    /// Instantiates the component in `store` and calls its export with `params`.
    pub fn call<P, R>(&self, store: &mut Store<CallState>, params: P) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let instance = self.pre.instantiate(&mut *store)?;
        let func = instance.get_typed_func::<P, R>(&mut *store, &self.func)?;
        func.call(&mut *store, params)
    }
}
