#include "map_compat.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>

#include <cstring>
#include <memory>

namespace bulkhead {
namespace {

std::string Vs(const char* what, uint64_t mine, uint64_t pinned) {
  return std::string(what) + " " + std::to_string(pinned) + " pinned vs " + std::to_string(mine);
}

// Typedefs and qualifiers change no byte: look through them.
uint32_t Skip(const struct btf* btf, uint32_t id) {
  for (int i = 0; i < 32 && id != 0; i++) {
    const struct btf_type* t = btf__type_by_id(btf, id);
    if (t == nullptr) return id;
    switch (btf_kind(t)) {
      case BTF_KIND_TYPEDEF:
      case BTF_KIND_VOLATILE:
      case BTF_KIND_CONST:
      case BTF_KIND_RESTRICT:
      case BTF_KIND_TYPE_TAG:
        id = t->type;
        break;
      default:
        return id;
    }
  }
  return id;
}

const char* Name(const struct btf* btf, uint32_t off) {
  const char* n = btf__name_by_offset(btf, off);
  return n != nullptr ? n : "";
}

// Structural equality of two BTF types: kinds, sizes, int encodings, array lengths, enum
// values, and for structs and unions every member's name, bit offset, bitfield size and
// type, recursively. Type names are not compared (renaming a struct moves no byte); member
// names are (a swapped pair of same-sized fields is a different layout).
std::string Diff(const struct btf* a, uint32_t ia, const struct btf* b, uint32_t ib,
                 const std::string& at, int depth) {
  if (depth > 16) return at + ": nested too deep to compare";
  ia = Skip(a, ia);
  ib = Skip(b, ib);
  if (ia == 0 || ib == 0) return ia == ib ? "" : at + ": void vs a type";
  const struct btf_type* ta = btf__type_by_id(a, ia);
  const struct btf_type* tb = btf__type_by_id(b, ib);
  if (ta == nullptr || tb == nullptr) return at + ": type id out of range";
  if (btf_kind(ta) != btf_kind(tb)) return at + ": kind " + std::to_string(btf_kind(tb)) + " vs " +
                                           std::to_string(btf_kind(ta));
  switch (btf_kind(ta)) {
    case BTF_KIND_INT: {
      uint32_t ea = *reinterpret_cast<const uint32_t*>(ta + 1);
      uint32_t eb = *reinterpret_cast<const uint32_t*>(tb + 1);
      if (ta->size != tb->size || ea != eb) return at + ": integer size or encoding";
      return "";
    }
    case BTF_KIND_FLOAT:
      return ta->size == tb->size ? "" : at + ": float size";
    case BTF_KIND_PTR:
    case BTF_KIND_FWD:
      return "";
    case BTF_KIND_ARRAY: {
      const struct btf_array* xa = btf_array(ta);
      const struct btf_array* xb = btf_array(tb);
      if (xa->nelems != xb->nelems) return at + ": " + Vs("array length", xa->nelems, xb->nelems);
      return Diff(a, xa->type, b, xb->type, at + "[]", depth + 1);
    }
    case BTF_KIND_ENUM: {
      if (ta->size != tb->size || btf_vlen(ta) != btf_vlen(tb)) return at + ": enum size or values";
      const struct btf_enum* ea = btf_enum(ta);
      const struct btf_enum* eb = btf_enum(tb);
      for (int i = 0; i < btf_vlen(ta); i++)
        if (ea[i].val != eb[i].val || std::strcmp(Name(a, ea[i].name_off), Name(b, eb[i].name_off)) != 0)
          return at + ": enum values";
      return "";
    }
    case BTF_KIND_ENUM64:
      return ta->size == tb->size && btf_vlen(ta) == btf_vlen(tb) ? "" : at + ": enum size or values";
    case BTF_KIND_STRUCT:
    case BTF_KIND_UNION: {
      if (ta->size != tb->size) return at + ": " + Vs("size", ta->size, tb->size);
      if (btf_vlen(ta) != btf_vlen(tb)) return at + ": " + Vs("member count", btf_vlen(ta), btf_vlen(tb));
      const struct btf_member* ma = btf_members(ta);
      const struct btf_member* mb = btf_members(tb);
      for (int i = 0; i < btf_vlen(ta); i++) {
        std::string na = Name(a, ma[i].name_off), nb = Name(b, mb[i].name_off);
        std::string m = at + "." + na;
        if (na != nb) return at + ": member " + std::to_string(i) + " is " + nb + " pinned vs " + na;
        if (btf_member_bit_offset(ta, i) != btf_member_bit_offset(tb, i))
          return m + ": " + Vs("bit offset", btf_member_bit_offset(ta, i), btf_member_bit_offset(tb, i));
        if (btf_member_bitfield_size(ta, i) != btf_member_bitfield_size(tb, i)) return m + ": bitfield size";
        std::string d = Diff(a, ma[i].type, b, mb[i].type, m, depth + 1);
        if (!d.empty()) return d;
      }
      return "";
    }
    default:
      return "";
  }
}

struct BtfDeleter {
  void operator()(struct btf* b) const { btf__free(b); }
};

}  // namespace

std::string MapDifference(struct bpf_object* obj, struct bpf_map* map, int pinnedFd) {
  struct bpf_map_info info;
  std::memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(pinnedFd, &info, &len) != 0) return "not a map";
  if (info.type != static_cast<uint32_t>(bpf_map__type(map))) return Vs("type", bpf_map__type(map), info.type);
  if (info.key_size != bpf_map__key_size(map)) return Vs("key size", bpf_map__key_size(map), info.key_size);
  if (info.value_size != bpf_map__value_size(map))
    return Vs("value size", bpf_map__value_size(map), info.value_size);
  if (info.max_entries != bpf_map__max_entries(map))
    return Vs("max_entries", bpf_map__max_entries(map), info.max_entries);
  if (info.map_flags != bpf_map__map_flags(map)) return Vs("flags", bpf_map__map_flags(map), info.map_flags);
  if (info.map_extra != bpf_map__map_extra(map)) return Vs("map_extra", bpf_map__map_extra(map), info.map_extra);

  const struct btf* mine = bpf_object__btf(obj);
  uint32_t myKey = bpf_map__btf_key_type_id(map), myValue = bpf_map__btf_value_type_id(map);
  bool iHaveTypes = mine != nullptr && (myKey != 0 || myValue != 0);
  bool pinHasTypes = info.btf_id != 0 && (info.btf_key_type_id != 0 || info.btf_value_type_id != 0);
  // libbpf creates some maps without key/value BTF whatever the source says (maps of
  // maps; any map when the kernel refuses its BTF): then the definition is all there is.
  if (!pinHasTypes) return "";
  if (!iHaveTypes) return "the pinned map has key/value BTF, this object's has none";
  std::unique_ptr<struct btf, BtfDeleter> pinned(btf__load_from_kernel_by_id(info.btf_id));
  if (!pinned) return "cannot read the pinned map's BTF";
  std::string d = Diff(mine, myKey, pinned.get(), info.btf_key_type_id, "key", 0);
  if (!d.empty()) return "key layout: " + d;
  d = Diff(mine, myValue, pinned.get(), info.btf_value_type_id, "value", 0);
  if (!d.empty()) return "value layout: " + d;
  return "";
}

}  // namespace bulkhead
