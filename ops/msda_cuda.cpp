// napari-focus: ATen binding of the CUDA deformable-attention kernels in
// msda_cuda_kernel.cu. Registered as torch.ops.napari_focus_cuda.ms_deform_attn.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "msda_checks.h"
#include "msda_cuda_kernel.cuh"

namespace {

using napari_focus_msda::DType;

DType to_kernel_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      TORCH_CHECK(false,
                  "napari-focus CUDA deformable attention supports float32, "
                  "float64, float16 and bfloat16 values, got ", type);
  }
}

at::Tensor ms_deform_attn_cuda(const at::Tensor& value,
                               const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index,
                               const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights) {
  TORCH_CHECK(value.is_cuda(), "napari-focus CUDA deformable attention needs CUDA tensors");
  TORCH_CHECK(sampling_locations.device() == value.device() &&
                  attention_weights.device() == value.device(),
              "value, sampling_locations and attention_weights must be on one device");
  const auto n = napari_focus_msda::check_msda_arguments(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const int64_t batch = n.batch, spatial = n.spatial, heads = n.heads, dim = n.dim;
  const int64_t queries = n.queries, levels = n.levels, points = n.points;
  // The level bounds are checked on the host. Host tensors (what napari-focus passes)
  // cost nothing here and are uploaded from pinned memory without waiting for the GPU;
  // device tensors are copied back first, which waits for the work queued before.
  const bool on_host = !spatial_shapes.is_cuda() && !level_start_index.is_cuda();
  const auto shapes_host = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
  const auto starts_host = level_start_index.to(at::kCPU, at::kLong).contiguous();
  napari_focus_msda::check_levels_fit(shapes_host.data_ptr<int64_t>(),
                                      starts_host.data_ptr<int64_t>(), n);

  const c10::cuda::CUDAGuard guard(value.device());
  const DType dtype = to_kernel_dtype(value.scalar_type());
  const auto acc_type = dtype == DType::kFloat64 ? at::kDouble : at::kFloat;
  const auto v = value.contiguous();
  const auto upload = [&](const at::Tensor& host, const at::Tensor& given) {
    return on_host ? host.pin_memory().to(value.device(), at::kLong, /*non_blocking=*/true)
                   : given.to(value.device(), at::kLong).contiguous();
  };
  const auto shapes = upload(shapes_host, spatial_shapes);
  const auto starts = upload(starts_host, level_start_index);
  const auto loc = sampling_locations.to(acc_type).contiguous();
  const auto attn = attention_weights.to(acc_type).contiguous();

  auto out = at::empty({batch, queries, heads * dim}, v.options());
  const cudaError_t err = napari_focus_msda::ms_deform_attn_forward(
      dtype, v.data_ptr(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
      loc.data_ptr(), attn.data_ptr(), out.data_ptr(), batch, spatial, heads, dim,
      queries, levels, points, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "napari-focus CUDA deformable attention failed: ",
              cudaGetErrorString(err));
  return out;
}

}  // namespace

TORCH_LIBRARY(napari_focus_cuda, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor "
      "level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> Tensor");
  m.impl("ms_deform_attn", c10::DispatchKey::CUDA, &ms_deform_attn_cuda);
}
