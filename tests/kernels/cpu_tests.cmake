# Tests of the CPU backend's internals (kernels/cpu/), owned by the CPU
# backend; included from tests/kernels/CMakeLists.txt. Each uses the float64
# oracle, checker and seed helpers of tests/reference.
include(GoogleTest)
foreach(name cpu_key_decode_test cpu_score_kernels_test cpu_topk_test
             cpu_request_store_test cpu_backend_test)
  add_executable(hisa_${name} ${CMAKE_CURRENT_LIST_DIR}/${name}.cc)
  target_link_libraries(hisa_${name} PRIVATE hisa_kernels hisa_reference
    GTest::gtest_main absl::strings)
  gtest_discover_tests(hisa_${name} DISCOVERY_MODE PRE_TEST
    PROPERTIES TIMEOUT 600)
endforeach()
