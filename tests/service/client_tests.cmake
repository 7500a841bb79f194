# Client-side tests, included by tests/service/CMakeLists.txt:
#   hisa_client_compact_positions_test  the compact positions codec as the
#                                       client decodes it (SPEC 4.3)
#   hisa_client_library_test            the client library against an
#                                       in-process fake service
#   hisa_client_e2e_test                the client library and hisa_cli
#                                       against a real hisa_server process
#                                       (when the server target exists)
if(NOT TARGET hisa_client)
  return()
endif()
find_package(gRPC CONFIG REQUIRED)
include(GoogleTest)

# Sanitizer environment: the service tests' (tests/service/CMakeLists.txt,
# HISA_SERVICE_TEST_ENV: TSan suppressions for Debian's uninstrumented gRPC,
# protobuf, Abseil and prometheus-cpp), which the e2e test's server inherits.
set(_client_test_env "${HISA_SERVICE_TEST_ENV}")
if(HISA_SANITIZE STREQUAL "address")
  set(_client_test_env "UBSAN_OPTIONS=halt_on_error=1 print_stacktrace=1")
endif()

add_executable(hisa_client_compact_positions_test
  ${CMAKE_CURRENT_LIST_DIR}/client_compact_positions_test.cc)
target_link_libraries(hisa_client_compact_positions_test PRIVATE hisa_wire
  hisa_reference GTest::gtest_main)
gtest_discover_tests(hisa_client_compact_positions_test DISCOVERY_MODE PRE_TEST
  PROPERTIES TIMEOUT 120 ENVIRONMENT "${_client_test_env}")

add_executable(hisa_client_library_test
  ${CMAKE_CURRENT_LIST_DIR}/client_library_test.cc)
target_link_libraries(hisa_client_library_test PRIVATE hisa_client
  hisa_client_tools hisa_reference gRPC::grpc++ GTest::gtest_main)
gtest_discover_tests(hisa_client_library_test DISCOVERY_MODE PRE_TEST
  PROPERTIES TIMEOUT 120 ENVIRONMENT "${_client_test_env}")

if(TARGET hisa_server AND TARGET hisa_cli)
  add_executable(hisa_client_e2e_test
    ${CMAKE_CURRENT_LIST_DIR}/client_e2e_test.cc)
  target_link_libraries(hisa_client_e2e_test PRIVATE hisa_client
    hisa_client_tools hisa_reference GTest::gtest_main)
  target_compile_definitions(hisa_client_e2e_test PRIVATE
    HISA_SERVER_BINARY="$<TARGET_FILE:hisa_server>"
    HISA_CLI_BINARY="$<TARGET_FILE:hisa_cli>")
  add_dependencies(hisa_client_e2e_test hisa_server hisa_cli)
  gtest_discover_tests(hisa_client_e2e_test DISCOVERY_MODE PRE_TEST
    PROPERTIES TIMEOUT 300 ENVIRONMENT "${_client_test_env}")
endif()

# Make absl::Mutex (HisaClient, the fake service) visible to TSan, as the
# service tests do.
if(TARGET hisa_tsan_absl_sync)
  foreach(test hisa_client_library_test hisa_client_e2e_test)
    if(TARGET ${test})
      target_link_libraries(${test} PRIVATE hisa_tsan_absl_sync)
      set_target_properties(${test} PROPERTIES ENABLE_EXPORTS ON)
    endif()
  endforeach()
endif()
