// Batch reads of a whole map: BPF_MAP_LOOKUP_(AND_DELETE_)BATCH until ENOENT.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bulkhead {

struct BatchSpec {
  int fd = -1;
  uint32_t keySize = 0;
  uint32_t valueBytes = 0;  // per entry as the kernel copies it out
  uint32_t batchSize = 0;   // entries per syscall to start with
  bool andDelete = false;
};

struct BatchResult {
  std::vector<uint8_t> keys;
  std::vector<uint8_t> values;
  uint32_t count = 0;
  int err = 0;  // 0, or the errno that stopped the walk (entries so far are kept)
};

// Collects every entry. A hash bucket larger than the batch gives ENOSPC with nothing
// copied (and, for a drain, nothing deleted): the batch doubles and the same position
// is read again, so no entry is lost or returned twice.
BatchResult ReadBatches(const BatchSpec& spec);

}  // namespace bulkhead
