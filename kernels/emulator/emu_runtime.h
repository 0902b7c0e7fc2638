// The emulator's launch interface, between the fake driver
// (emu_driver.cpp) and the fiber scheduler (emu_runtime.cpp).
#pragma once

#include <string>

#include "emu_registry.h"

struct ClaimEmuDim {
    unsigned x, y, z;
};

// Runs every block of the grid (blocks spread over the worker threads,
// each block's threads as fibers on one worker) and returns when all have
// finished. Returns false with `error` set when a kernel broke a rule the
// hardware relies on (a collective with lanes missing, a deadlock, a
// misaligned cp.async or ldmatrix address).
bool claim_emu_run(const ClaimEmuKernel& kernel, ClaimEmuDim grid, ClaimEmuDim block, void** params,
                   std::string* error);
