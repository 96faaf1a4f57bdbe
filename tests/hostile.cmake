# Hostile input: release bundles (agent/bundle.h) unpacked as root. The YAML
# limits are tested in tern_core_tests (core/yaml_config_test.cc).
find_package(ZLIB REQUIRED)

tern_test(tern_bundle_tests
  SOURCES agent/bundle_test.cc
  LIBS tern_agent_lib ZLIB::ZLIB)
