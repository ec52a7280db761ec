// cuda_runtime.h -- simulator stand-in: everything lives in gpuconv_sim.h.
#pragma once
#include "gpuconv_sim.h"
