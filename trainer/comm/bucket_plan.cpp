#include "trainer/comm/bucket_plan.h"

#include "common/error.h"

namespace perennial {

std::vector<Bucket> planBuckets(const std::vector<ParamInfo>& params, size_t capBytes) {
  PERENNIAL_CHECK(capBytes > 0, "bucket cap must be positive");
  std::vector<Bucket> buckets;
  for (size_t i = params.size(); i-- > 0;) {
    const ParamInfo& p = params[i];
    const size_t bytes = p.numel * dtypeSize(p.type);
    // A non-empty bucket that cannot take the tensor is closed; a new bucket takes anything, so
    // a tensor above the cap ends up alone in its bucket.
    const bool startNew = buckets.empty() || buckets.back().type != p.type ||
                          (buckets.back().numel > 0 && buckets.back().bytes() + bytes > capBytes);
    if (startNew) buckets.push_back(Bucket{p.type, 0, {}});
    Bucket& b = buckets.back();
    b.entries.push_back(BucketEntry{i, b.numel, p.numel});
    b.numel += p.numel;
  }
  return buckets;
}

}  // namespace perennial
