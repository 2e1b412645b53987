"""Builds muster-client: compiles proto/proto/muster/v1/*.proto of this
checkout into muster/v1/*_pb2.py and *_pb2_grpc.py in the build, so the
package always matches the API it was built with."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROTOS = Path(__file__).resolve().parent.parent.parent / "proto" / "proto"


class BuildWithProtos(build_py):
    def run(self):
        super().run()
        import grpc_tools
        from grpc_tools import protoc

        sources = sorted(str(p) for p in (PROTOS / "muster" / "v1").glob("*.proto"))
        if not sources:
            raise SystemExit(f"no protos under {PROTOS}: build from a muster checkout")
        well_known = str(Path(grpc_tools.__file__).parent / "_proto")
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTOS}",
                f"-I{well_known}",
                f"--python_out={self.build_lib}",
                f"--pyi_out={self.build_lib}",
                f"--grpc_python_out={self.build_lib}",
                *sources,
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed ({code})")


setup(cmdclass={"build_py": BuildWithProtos})
