#pragma once
// The per-step control values that ride in the last gradient bucket (torch-free).
//
// NOTE [Control block]: every step needs the ranks to agree on whether to stop (a signal reaches
// them at different moments), and every train.log_every steps on the window's mean loss. Instead
// of their own collectives, both ride at the end of the last bucket the reducer all-reduces (a
// sum): one collective per step where the gradient fits one bucket. Layout, in the bucket's
// element type:
//   [0]                stop flag: each rank writes 1 or 0; after the sum, > 0 means stop
//   [1 + 4r .. 4r + 4] rank r's window loss as (k, t1, t2, t3) with loss = (t1 + t2 + t3) * 2^k;
//                      the other ranks write zeros there, so the sum carries each rank's value
//                      unchanged (x + 0 = x)
// Each t is representable in the wire type (the bucket's type, or the narrower one of
// comm.compression), so narrowing for the wire loses nothing: the loss arrives to about
// 24 significant bits with bfloat16 or half and to double precision with float32, whatever the
// compression does to gradients. The flag survives any sum (non-negative terms never round to 0).
#include <cstddef>

namespace perennial {

enum class WireType { kFloat32, kFloat64, kBFloat16, kFloat16 };

struct ControlValues {
  bool stop = false;
  double lossSum = 0;  // the ranks' window losses, summed in rank order (0 when none was sent)
};

// Elements the block takes at world size WORLD.
inline size_t controlSlots(int world) { return 1 + 4 * static_cast<size_t>(world); }

// Writes rank RANK's values into SLOTS (controlSlots(world) elements; T is float or double),
// zeroing every other rank's. LOSS is this rank's window loss (0 when no window ends this step).
template <typename T>
void encodeControl(T* slots, int world, int rank, bool stop, double loss, WireType wire);

// Reads SLOTS after the all-reduce.
template <typename T>
ControlValues decodeControl(const T* slots, int world);

}  // namespace perennial
