// Precompiled header for the LibTorch translation units: the narrow set of ATen/autograd headers
// the engine uses (never torch/torch.h, which costs ~12 s per TU to parse).
#pragma once
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <vector>
#include <string>
#include <memory>
#include <functional>
