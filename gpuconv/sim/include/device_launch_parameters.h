// device_launch_parameters.h -- simulator stand-in: everything lives in gpuconv_sim.h.
#pragma once
#include "gpuconv_sim.h"
