//! TransAct on the GPU: WGSL compute kernels run through wgpu (Vulkan,
//! Metal, DX12), computing what `transact-model` computes on the CPU.
//!
//! # Layers
//!
//! - [`device`]: adapter choice from `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
//!   `WGPU_POWER_PREF`; device creation with the optional features the
//!   adapter has (`SHADER_F16`, `TIMESTAMP_QUERY`).
//! - [`context`]: [`GpuContext`], the device plus shader / pipeline caches,
//!   a buffer pool and [`Request`], which records the dispatches of one
//!   request into one command buffer and reads back only its result.
//! - [`kernels`]: launchers for the shaders in `shaders/` (GEMM, LayerNorm,
//!   attention, V2's nearest-neighbour selection in [`kernels::select`]).
//! - [`v2`]: the TransAct V2 encoder blocks ([`GpuV2Blocks`]), unfused or
//!   fused into one dispatch per layer, f32 or f16 storage.
//! - [`heads`]: the ranking heads ([`GpuRankingHeads`]).
//! - [`ranking`]: the whole model, a V1 or V2 encoder and the heads
//!   ([`GpuRankingModel`]).
//! - [`timing`]: GPU or wall time of one forward.
//! - [`testing`]: the shared test context (skip without a GPU, fail under
//!   `CI=true`).
//!
//! Library code returns [`GpuError`] for every failure, including wrong
//! input lengths; it does not panic on input.

pub mod context;
pub mod device;
mod error;
pub mod heads;
pub mod kernels;
pub mod ranking;
pub mod testing;
pub mod timing;
pub mod v1;
pub mod v2;

pub use context::{
    BufferKind, GpuContext, Kernel, KernelSpec, PooledBuffer, Readback, Request, Shader, Storage,
};
pub use device::AdapterRequest;
pub use error::GpuError;
pub use heads::GpuRankingHeads;
pub use ranking::GpuRankingModel;
pub use v1::GpuTransActV1;
pub use v2::{GpuV2Blocks, Precision, Variant};
