# Convenience wrapper around CMake. The real build is CMakeLists.txt.
BUILD ?= build
.PHONY: all check install demo soak lint structure bench clean
all:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD)
check: all
	cd $(BUILD) && ctest --output-on-failure -j$$(nproc)
install: all
	cmake --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX))
demo:
	scripts/demo.sh
# 1,000 restarts of the HTTP example under wrk (a few minutes).
soak:
	scripts/deps.sh
	cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
	cmake --build build-release --target hello
	scripts/soak.py --hello build-release/examples/hello --restarts 1000
lint:
	scripts/lint.sh
# Which file uses which, cycles, long files (also part of lint).
structure:
	scripts/check-structure.py
# handoff vs nginx and HAProxy on this machine: docs/benchmarks.md and
# docs/img/*.png (~45 min; BENCH_ARGS=--quick for ~15 min).
bench:
	scripts/deps.sh
	bench/run-all $(BENCH_ARGS)
clean:
	rm -rf $(BUILD) build-*
