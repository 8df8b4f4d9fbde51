// Python bindings of the orthographic rasterizer (kept apart from the .cu so nvcc never sees pybind).
#include <torch/extension.h>

#include "rasterizer.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "streamsplat_ns orthographic Gaussian rasterizer (CUDA)";
    m.def("rasterize_forward", &ssns::rasterize_forward, "tiled forward render (see rasterizer.h)");
    m.def("rasterize_backward", &ssns::rasterize_backward, "backward of rasterize_forward");
}
