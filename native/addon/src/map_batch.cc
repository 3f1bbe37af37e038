#include "map_batch.h"

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>

#include "errors.h"

namespace bulkhead {
namespace {

// For maps without batch operations (LPM tries): get_next_key, then lookup (and delete)
// per key. Not atomic per entry the way a batch is; only dumps of maps user space writes
// take this path.
BatchResult ReadByKeys(const BatchSpec& spec) {
  BatchResult out;
  std::vector<uint8_t> key(spec.keySize), next(spec.keySize), value(spec.valueBytes);
  const void* prev = nullptr;
  for (;;) {
    int r = bpf_map_get_next_key(spec.fd, prev, next.data());
    if (r < 0) {
      int err = PositiveErrno(r);
      if (err != ENOENT) out.err = err;
      return out;
    }
    key.swap(next);
    prev = key.data();
    r = bpf_map_lookup_elem(spec.fd, key.data(), value.data());
    if (r < 0) {
      int err = PositiveErrno(r);
      if (err == ENOENT) continue;  // deleted meanwhile
      out.err = err;
      return out;
    }
    if (spec.andDelete) bpf_map_delete_elem(spec.fd, key.data());
    out.keys.insert(out.keys.end(), key.begin(), key.end());
    out.values.insert(out.values.end(), value.begin(), value.end());
    out.count++;
  }
}

}  // namespace

BatchResult ReadBatches(const BatchSpec& spec) {
  BatchResult out;
  // The position token is a bucket index (u32) for hash maps and a key for arrays.
  const size_t tokenSize = BatchTokenSize(spec.keySize);
  std::vector<uint8_t> inToken(tokenSize), outToken(tokenSize);
  // A resumed piece starts at the given position, not at the map's start.
  bool first = spec.from == nullptr;
  if (!first) std::copy(spec.from, spec.from + tokenSize, inToken.begin());
  // Stops with entries left: the next piece starts where this one stopped.
  auto stopHere = [&]() {
    out.next = first ? std::vector<uint8_t>(tokenSize, 0) : inToken;
    return out;
  };
  uint32_t batch = std::max<uint32_t>(spec.batchSize, 1);
  std::vector<uint8_t> keys, values;
  auto opts = LibbpfOpts<bpf_map_batch_opts>();
  const size_t room = spec.keysInto != nullptr && spec.valuesInto != nullptr && spec.keySize > 0 &&
                              spec.valueBytes > 0
                          ? std::min(spec.keysIntoBytes / spec.keySize, spec.valuesIntoBytes / spec.valueBytes)
                          : 0;
  out.inPlace = room > 0;
  out.keySize = spec.keySize;
  out.valueBytes = spec.valueBytes;
  // Leaves the caller's buffers: what is there so far moves to the vectors.
  auto spill = [&]() {
    out.keys.assign(spec.keysInto, spec.keysInto + size_t(out.count) * spec.keySize);
    out.values.assign(spec.valuesInto, spec.valuesInto + size_t(out.count) * spec.valueBytes);
    out.inPlace = false;
  };

  for (;;) {
    uint32_t ask = batch;
    uint8_t* keysDst;
    uint8_t* valuesDst;
    if (out.inPlace && room - out.count == 0) {
      if (spec.stopWhenFull) return stopHere();
      spill();
    }
    if (out.inPlace) {
      ask = static_cast<uint32_t>(std::min<size_t>(batch, room - out.count));
      keysDst = spec.keysInto + size_t(out.count) * spec.keySize;
      valuesDst = spec.valuesInto + size_t(out.count) * spec.valueBytes;
    } else {
      keys.resize(static_cast<size_t>(batch) * spec.keySize);
      values.resize(static_cast<size_t>(batch) * spec.valueBytes);
      keysDst = keys.data();
      valuesDst = values.data();
    }
    uint32_t count = ask;
    void* in = first ? nullptr : inToken.data();
    int r = spec.andDelete
                ? bpf_map_lookup_and_delete_batch(spec.fd, in, outToken.data(), keysDst, valuesDst,
                                                  &count, &opts)
                : bpf_map_lookup_batch(spec.fd, in, outToken.data(), keysDst, valuesDst, &count, &opts);
    int err = r < 0 ? PositiveErrno(r) : 0;
    if (first && spec.from == nullptr && (err == EINVAL || err == EOPNOTSUPP || err == 524)) return ReadByKeys(spec);
    if (err == ENOSPC && count == 0) {
      // Nothing was copied or deleted: the same position is read again with more room.
      if (ask < batch) {
        // A bucket larger than the room left: a piece ends before it (a later call reads it).
        if (spec.stopWhenFull && out.count > 0) return stopHere();
        spill();
        continue;
      }
      if (batch >= (1u << 24)) {
        if (out.inPlace) spill();
        out.err = ENOSPC;
        return out;
      }
      batch *= 2;
      continue;
    }
    if (err != 0 && err != ENOENT) count = 0;  // nothing reliable came back
    if (count > 0) {
      if (!out.inPlace) {
        out.keys.insert(out.keys.end(), keys.begin(), keys.begin() + size_t(count) * spec.keySize);
        out.values.insert(out.values.end(), values.begin(),
                          values.begin() + size_t(count) * spec.valueBytes);
      }
      out.count += count;
    }
    if (err == ENOENT) return out;
    if (err != 0) {
      out.err = err;
      return out;
    }
    inToken.swap(outToken);
    first = false;
  }
}

}  // namespace bulkhead
