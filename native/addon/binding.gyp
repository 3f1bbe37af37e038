{
  "targets": [
    {
      "target_name": "bulkhead",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/netns.cc",
        "src/event_loop_watch.cc",
        "src/object.cc",
        "src/open.cc",
        "src/map.cc",
        "src/map_batch.cc",
        "src/program.cc",
        "src/link.cc",
        "src/tc_attach.cc",
        "src/ringbuf.cc",
        "src/netlink.cc",
        "src/link_watcher.cc",
        "src/raw_socket.cc",
        "src/kernel_objects.cc",
        "src/clock.cc",
        "src/map_compat.cc",
        "src/pinned_map.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
