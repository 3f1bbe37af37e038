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
  // Where to read to, when the caller owns reusable buffers (the agent drains every second:
  // a fresh pair of buffers per drain is memory the process holds until V8 collects it).
  // Entries go straight from the kernel into them; only past their room do they go to
  // BatchResult's vectors (and what was in place is moved there too).
  uint8_t* keysInto = nullptr;
  size_t keysIntoBytes = 0;
  uint8_t* valuesInto = nullptr;
  size_t valuesIntoBytes = 0;
  // Read only what fits in the caller's buffers and leave the rest in the map (a drain in
  // pieces: the caller decodes one piece, then drains again, so it never holds a full
  // map's worth). Only when the first bucket alone does not fit do the vectors take over.
  bool stopWhenFull = false;
  // Where a piece starts: the position token an earlier stopped read returned (its .next),
  // so a piece resumes there instead of at bucket 0. tokenSize bytes, or null: the start.
  const uint8_t* from = nullptr;
};

// Bytes of the kernel's batch position token: a bucket index (u32) for hash maps, a key
// for arrays; libbpf reads and writes at most this many.
inline size_t BatchTokenSize(uint32_t keySize) { return keySize > 8 ? keySize : 8; }

struct BatchResult {
  std::vector<uint8_t> keys;
  std::vector<uint8_t> values;
  uint32_t count = 0;
  bool inPlace = false;  // the entries are at spec.keysInto/valuesInto; keys and values are empty
  uint32_t keySize = 0;     // bytes per entry, as in the spec
  uint32_t valueBytes = 0;
  // Set when a read stopped with entries left (stopWhenFull): the position to pass as
  // BatchSpec::from for the next piece. Empty once the walk reached the map's end.
  std::vector<uint8_t> next;
  int err = 0;  // 0, or the errno that stopped the walk (entries so far are kept)
};

// Collects every entry. A hash bucket larger than the batch gives ENOSPC with nothing
// copied (and, for a drain, nothing deleted): the batch doubles and the same position
// is read again, so no entry is lost or returned twice.
BatchResult ReadBatches(const BatchSpec& spec);

}  // namespace bulkhead
