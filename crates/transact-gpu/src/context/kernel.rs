//! Shaders, pipeline specifications and the context's module and pipeline
//! caches.

use std::sync::Arc;

use super::GpuContext;
use crate::GpuError;

/// A WGSL source file from `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shader {
    /// File name without `.wgsl` (cache key and error label).
    pub name: &'static str,
    /// The WGSL text.
    pub source: &'static str,
}

/// Element type of the storage buffers a kernel reads and writes. Shaders
/// use the alias `st` for it (and compute in `f32`); the context prepends
/// the alias (and `enable f16;` for [`Storage::F16`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Storage {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats (needs `SHADER_F16`).
    F16,
}

impl Storage {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
        }
    }

    fn prelude(self) -> &'static str {
        match self {
            Storage::F32 => "alias st = f32;\n",
            Storage::F16 => "enable f16;\nalias st = f16;\n",
        }
    }
}

/// Everything that identifies one compute pipeline.
#[derive(Clone, Debug)]
pub struct KernelSpec<'a> {
    /// The shader file.
    pub shader: Shader,
    /// Entry point (a `@compute` function).
    pub entry: &'a str,
    /// Values of the shader's `override` constants (bools as 0/1).
    pub constants: &'a [(&'a str, f64)],
    /// Storage element type.
    pub storage: Storage,
    /// Zero the workgroup memory before the kernel runs. Turn off only for
    /// kernels that write their workgroup memory before reading it.
    pub zero_workgroup_memory: bool,
}

impl<'a> KernelSpec<'a> {
    /// `entry` of `shader`, f32 storage, no overrides, zeroed workgroup
    /// memory.
    pub fn new(shader: Shader, entry: &'a str) -> Self {
        Self {
            shader,
            entry,
            constants: &[],
            storage: Storage::F32,
            zero_workgroup_memory: true,
        }
    }

    /// With these override values.
    pub fn constants(mut self, constants: &'a [(&'a str, f64)]) -> Self {
        self.constants = constants;
        self
    }

    /// With this storage type.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PipelineKey {
    shader: &'static str,
    storage: Storage,
    entry: String,
    /// Override names and the bit patterns of their values, sorted.
    constants: Vec<(String, u64)>,
    zero: bool,
}

/// A compiled compute pipeline and its bind group layout.
#[derive(Debug)]
pub struct Kernel {
    /// `"shader::entry"`, for labels and errors.
    pub label: String,
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) layout: wgpu::BindGroupLayout,
}

impl GpuContext {
    /// The compiled pipeline for `spec`, built on first use and cached.
    pub fn kernel(&self, spec: &KernelSpec<'_>) -> Result<Arc<Kernel>, GpuError> {
        self.check_alive()?;
        let mut constants: Vec<(String, u64)> = spec
            .constants
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.to_bits()))
            .collect();
        constants.sort();
        let key = PipelineKey {
            shader: spec.shader.name,
            storage: spec.storage,
            entry: spec.entry.to_string(),
            constants,
            zero: spec.zero_workgroup_memory,
        };
        if let Some(k) = self.pipelines.lock().get(&key) {
            return Ok(k.clone());
        }
        let label = format!("{}::{}", spec.shader.name, spec.entry);
        let fail = |message: String| GpuError::Pipeline {
            shader: spec.shader.name.into(),
            entry: spec.entry.into(),
            message,
        };
        if spec.storage == Storage::F16 && !self.has_f16() {
            return Err(fail(
                "f16 storage needs SHADER_F16, which this device lacks".into(),
            ));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.module(spec.shader, spec.storage);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: spec.constants,
                    zero_initialize_workgroup_memory: spec.zero_workgroup_memory,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            // A bad module stays cached as bad: drop it so a fixed spec
            // does not see it (modules only depend on the source, so this
            // is only about memory).
            return Err(fail(e.to_string()));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let kernel = Arc::new(Kernel {
            label,
            pipeline,
            layout,
        });
        self.pipelines.lock().insert(key, kernel.clone());
        Ok(kernel)
    }

    fn module(&self, shader: Shader, storage: Storage) -> Arc<wgpu::ShaderModule> {
        let mut modules = self.modules.lock();
        modules
            .entry((shader.name, storage))
            .or_insert_with(|| {
                let src = format!("{}{}", storage.prelude(), shader.source);
                Arc::new(
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(shader.name),
                            source: wgpu::ShaderSource::Wgsl(src.into()),
                        }),
                )
            })
            .clone()
    }
}
