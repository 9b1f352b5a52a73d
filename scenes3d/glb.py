"""A tile's mesh and its features' properties as binary glTF, the content of a 3D Tiles 1.1
tile.

Each vertex names its feature (``EXT_mesh_features``) and the features' properties are a
property table (``EXT_structural_metadata``), so a viewer can pick a building and show
what the caller may read of it, masked where the grant masks. glTF is y-up: the local
east-north-up frame is written as (east, up, -north), which 3D Tiles turns back.
"""

from __future__ import annotations

import re

import numpy as np
import pygltflib as gl

from scenes3d.mesh import Mesh

CLASS = "feature"
HEIGHT = "_height"  # the height the feature was extruded to, in metres
_ALIGN = 8  # EXT_structural_metadata wants every buffer view on 8 bytes
_NAME = re.compile(r"[^A-Za-z0-9_]")


def _identifier(name: str) -> str:
    out = _NAME.sub("_", name)
    return out if out[:1].isalpha() or out[:1] == "_" else f"_{out}"


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[gl.BufferView] = []

    def add(self, raw: bytes, target: int | None = None) -> int:
        self.data += b"\0" * (-len(self.data) % _ALIGN)
        self.views.append(gl.BufferView(buffer=0, byteOffset=len(self.data),
                                        byteLength=len(raw), target=target))
        self.data += raw
        return len(self.views) - 1


def _strings(buf: _Buffer, values: list[str | None]) -> dict[str, int]:
    encoded = [(v or "").encode() for v in values]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.uint32)
    return {"values": buf.add(b"".join(encoded)), "stringOffsets": buf.add(offsets.tobytes())}


def encode(mesh: Mesh, properties: dict[str, list[str | None]],
           heights: list[float]) -> bytes:
    """Binary glTF of ``mesh``; ``properties`` hold one value per feature, as text."""
    count = len(heights)
    buf = _Buffer()
    xyz = np.column_stack([mesh.positions[:, 0], mesh.positions[:, 2],
                           -mesh.positions[:, 1]]).astype(np.float32)
    # Flat normals, one per triangle: viewers light a mesh only when it has them.
    tri = xyz.reshape(-1, 3, 3).astype(np.float64)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(cross, axis=1, keepdims=True)
    normals = np.repeat(np.divide(cross, length, out=np.tile([[0.0, 1.0, 0.0]], (len(cross), 1)),
                                  where=length > 0), 3, axis=0).astype(np.float32)
    pos_view = buf.add(xyz.tobytes(), gl.ARRAY_BUFFER)
    normal_view = buf.add(normals.tobytes(), gl.ARRAY_BUFFER)
    ids_view = buf.add(mesh.feature_ids.astype(np.float32).tobytes(), gl.ARRAY_BUFFER)
    accessors = [
        gl.Accessor(bufferView=pos_view, componentType=gl.FLOAT, count=len(xyz), type=gl.VEC3,
                    min=xyz.min(axis=0).tolist() if len(xyz) else [0, 0, 0],
                    max=xyz.max(axis=0).tolist() if len(xyz) else [0, 0, 0]),
        gl.Accessor(bufferView=ids_view, componentType=gl.FLOAT, count=len(xyz),
                    type=gl.SCALAR),
        gl.Accessor(bufferView=normal_view, componentType=gl.FLOAT, count=len(xyz),
                    type=gl.VEC3),
    ]
    schema_props: dict[str, dict] = {HEIGHT: {"type": "SCALAR", "componentType": "FLOAT32"}}
    table: dict[str, dict] = {
        HEIGHT: {"values": buf.add(np.asarray(heights, dtype=np.float32).tobytes())}}
    for name, values in properties.items():
        key = _identifier(name)
        schema_props[key] = {"name": name, "type": "STRING", "noData": ""}
        if any(values):  # else every value is noData; glTF allows no empty buffer views
            table[key] = _strings(buf, values)

    attributes = gl.Attributes(POSITION=0, NORMAL=2)
    attributes._FEATURE_ID_0 = 1
    primitive = gl.Primitive(attributes=attributes, material=0, mode=gl.TRIANGLES, extensions={
        "EXT_mesh_features": {"featureIds": [
            {"featureCount": count, "attribute": 0, "propertyTable": 0}]}})
    doc = gl.GLTF2(
        asset=gl.Asset(version="2.0", generator="OneMap"),
        scene=0, scenes=[gl.Scene(nodes=[0])], nodes=[gl.Node(mesh=0)],
        meshes=[gl.Mesh(primitives=[primitive])],
        materials=[gl.Material(pbrMetallicRoughness=gl.PbrMetallicRoughness(
            baseColorFactor=[0.93, 0.92, 0.89, 1.0], metallicFactor=0.0,
            roughnessFactor=0.9))],
        accessors=accessors, bufferViews=buf.views,
        buffers=[gl.Buffer(byteLength=len(buf.data))],
        extensionsUsed=["EXT_mesh_features", "EXT_structural_metadata"],
        extensions={"EXT_structural_metadata": {
            "schema": {"id": "onemap", "classes": {CLASS: {"properties": schema_props}}},
            "propertyTables": [{"class": CLASS, "count": count, "properties": table}]}})
    doc.set_binary_blob(bytes(buf.data))
    return b"".join(doc.save_to_bytes())
