"""Small stand-ins for the few Slicer, MRML and VTK calls ClaimScarLib uses.

They are handed to `SceneLogic(slicer=..., vtk=..., claim=...)`; nothing
here imports or patches Slicer. Behaviour copied from Slicer where it
matters to the module:

- slicer.util.arrayFromVolume returns the voxels indexed [k, j, i] (a view);
  updateVolumeFromArray deep-copies.
- A volume's geometry is only its IJK-to-RAS 4x4 matrix.
- ExportSegmentsToLabelmapNode(seg, ids, labelmap, reference) writes segment
  ids[n] as value n + 1 on the reference grid and gives the labelmap a new
  colour table named "<labelmap name>_ColorTable".
- ImportLabelmapToSegmentationNode(labelmap, seg) adds one segment per
  non-zero value, in ascending order, named and coloured from the labelmap
  display node's colour table (GetColorName / GetColor), else "Label_<v>".

The fakes hold segments as full-size masks on one grid and do not resample:
a reference grid different from a segment's raises NotImplementedError.
"""

import itertools
from types import SimpleNamespace

import numpy as np

_ids = itertools.count(1)

# Class name -> the class names IsA() accepts (MRML's inheritance).
_BASES = {
    "vtkMRMLScalarVolumeNode": ("vtkMRMLScalarVolumeNode", "vtkMRMLVolumeNode", "vtkMRMLDisplayableNode", "vtkMRMLNode"),
    "vtkMRMLLabelMapVolumeNode": (
        "vtkMRMLLabelMapVolumeNode",
        "vtkMRMLScalarVolumeNode",
        "vtkMRMLVolumeNode",
        "vtkMRMLDisplayableNode",
        "vtkMRMLNode",
    ),
    "vtkMRMLSegmentationNode": ("vtkMRMLSegmentationNode", "vtkMRMLDisplayableNode", "vtkMRMLNode"),
    "vtkMRMLColorTableNode": ("vtkMRMLColorTableNode", "vtkMRMLColorNode", "vtkMRMLNode"),
    "vtkMRMLDisplayNode": ("vtkMRMLDisplayNode", "vtkMRMLNode"),
}


# --- VTK ---------------------------------------------------------------------


class FakeMatrix4x4:
    def __init__(self):
        self._m = np.eye(4)

    def GetElement(self, r, c):
        return float(self._m[r, c])

    def SetElement(self, r, c, value):
        self._m[r, c] = float(value)

    def DeepCopy(self, other):
        self._m = np.array(other._m)


class FakeStringArray:
    def __init__(self):
        self._values = []

    def GetNumberOfValues(self):
        return len(self._values)

    def GetValue(self, n):
        return self._values[n]

    def InsertNextValue(self, value):
        self._values.append(str(value))
        return len(self._values) - 1


def make_vtk():
    return SimpleNamespace(vtkMatrix4x4=FakeMatrix4x4, vtkStringArray=FakeStringArray)


# --- MRML nodes ----------------------------------------------------------------


class FakeNode:
    className = "vtkMRMLNode"

    def __init__(self, name=""):
        self._id = f"{self.className}{next(_ids)}"
        self._name = name
        self._scene = None
        self._transform_id = None
        self._displays = []

    def GetID(self):
        return self._id

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name

    def GetClassName(self):
        return self.className

    def IsA(self, name):
        return name in _BASES.get(self.className, (self.className,))

    def GetScene(self):
        return self._scene

    def GetTransformNodeID(self):
        return self._transform_id

    def SetAndObserveTransformNodeID(self, node_id):
        self._transform_id = node_id or None

    def GetDisplayNode(self):
        return self._displays[0] if self._displays else None

    def GetNumberOfDisplayNodes(self):
        return len(self._displays)

    def GetNthDisplayNode(self, n):
        return self._displays[n]

    def _add_display(self):
        display = FakeDisplayNode()
        self._scene.AddNode(display)
        self._displays.append(display)
        return display


class FakeDisplayNode(FakeNode):
    className = "vtkMRMLDisplayNode"

    def __init__(self, name=""):
        super().__init__(name)
        self._color_id = None
        self.window_level = None
        self.auto_window_level = True

    def SetAndObserveColorNodeID(self, node_id):
        self._color_id = node_id

    def GetColorNode(self):
        return None if self._color_id is None else self._scene.GetNodeByID(self._color_id)

    def GetWindow(self):
        return 400.0 if self.window_level is None else self.window_level[0]

    def GetLevel(self):
        return 40.0 if self.window_level is None else self.window_level[1]

    def SetAutoWindowLevel(self, flag):
        self.auto_window_level = bool(flag)

    def SetWindowLevel(self, window, level):
        self.window_level = (float(window), float(level))


class FakeVolumeNode(FakeNode):
    """vtkMRMLScalarVolumeNode: voxels [k, j, i] plus an IJK-to-RAS matrix."""

    className = "vtkMRMLScalarVolumeNode"

    def __init__(self, name="", array=None, ijk_to_ras=None):
        super().__init__(name)
        self._array = None if array is None else np.array(array)
        self._ijk_to_ras = np.eye(4) if ijk_to_ras is None else np.array(ijk_to_ras, dtype=np.float64)

    def GetIJKToRASMatrix(self, matrix):
        for r in range(4):
            for c in range(4):
                matrix.SetElement(r, c, self._ijk_to_ras[r, c])

    def SetIJKToRASMatrix(self, matrix):
        self._ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])

    def CreateDefaultDisplayNodes(self):
        if not self._displays:
            self._add_display()


class FakeLabelMapVolumeNode(FakeVolumeNode):
    className = "vtkMRMLLabelMapVolumeNode"

    def CreateDefaultDisplayNodes(self):
        if not self._displays:
            display = self._add_display()
            generic = self._scene.GetFirstNodeByName("GenericAnatomyColors")
            if generic is None:
                generic = self._scene.AddNewNodeByClass("vtkMRMLColorTableNode", "GenericAnatomyColors")
            display.SetAndObserveColorNodeID(generic.GetID())


class FakeColorTableNode(FakeNode):
    className = "vtkMRMLColorTableNode"

    def __init__(self, name=""):
        super().__init__(name)
        self._colors = {}
        self._count = 0
        self.type = None
        self.names_initialised = False

    def SetTypeToUser(self):
        self.type = "User"

    def SetNumberOfColors(self, n):
        self._count = int(n)

    def GetNumberOfColors(self):
        return self._count

    def NamesInitialisedOn(self):
        self.names_initialised = True

    def SetColor(self, index, name, r, g, b, a=1.0):
        if not 0 <= index < self._count:
            return 0
        self._colors[int(index)] = (str(name), (float(r), float(g), float(b), float(a)))
        return 1

    def GetColorName(self, index):
        entry = self._colors.get(int(index))
        return None if entry is None else entry[0]

    def GetColor(self, index, color):
        entry = self._colors.get(int(index))
        if entry is None:
            return False
        color[:] = list(entry[1])
        return True


class FakeSegment:
    def __init__(self, name, color):
        self._name = name
        self._color = tuple(color)

    def GetName(self):
        return self._name

    def SetName(self, name):
        self._name = name

    def GetColor(self):
        return self._color

    def SetColor(self, r, g, b):
        self._color = (r, g, b)


class FakeSegmentation:
    """Segments in insertion order, each a full-size bool mask on a grid."""

    def __init__(self):
        self._segments = {}  # id -> (FakeSegment, mask, ijk_to_ras)
        self._next = itertools.count(1)

    def GetSegmentIDs(self, string_array):
        for segment_id in self._segments:
            string_array.InsertNextValue(segment_id)

    def GetNumberOfSegments(self):
        return len(self._segments)

    def GetSegment(self, segment_id):
        entry = self._segments.get(segment_id)
        return None if entry is None else entry[0]

    def RemoveAllSegments(self):
        self._segments.clear()

    # test helpers (not Slicer API)
    def add_mask(self, name, mask, ijk_to_ras, color=(0.5, 0.5, 0.5)):
        segment_id = f"Segment_{next(self._next)}"
        self._segments[segment_id] = (FakeSegment(name, color), np.asarray(mask, dtype=bool), np.array(ijk_to_ras))
        return segment_id

    def mask(self, segment_id):
        return self._segments[segment_id][1]

    def names(self):
        return [entry[0].GetName() for entry in self._segments.values()]

    def by_name(self, name):
        for segment, mask, _ in self._segments.values():
            if segment.GetName() == name:
                return segment, mask
        raise KeyError(name)


class FakeSegmentationNode(FakeNode):
    className = "vtkMRMLSegmentationNode"

    def __init__(self, name=""):
        super().__init__(name)
        self._segmentation = FakeSegmentation()
        self.reference_geometry = None

    def GetSegmentation(self):
        return self._segmentation

    def CreateDefaultDisplayNodes(self):
        if not self._displays:
            self._add_display()

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume_node):
        self.reference_geometry = (volume_node._array.shape, np.array(volume_node._ijk_to_ras))


_NODE_CLASSES = {
    cls.className: cls
    for cls in (FakeVolumeNode, FakeLabelMapVolumeNode, FakeColorTableNode, FakeSegmentationNode, FakeDisplayNode)
}


class FakeScene:
    def __init__(self):
        self._nodes = []

    def AddNode(self, node):
        node._scene = self
        self._nodes.append(node)
        return node

    def AddNewNodeByClass(self, class_name, name=""):
        return self.AddNode(_NODE_CLASSES[class_name](name))

    def RemoveNode(self, node):
        if node in self._nodes:
            self._nodes.remove(node)
            node._scene = None

    def IsNodePresent(self, node):
        return node in self._nodes

    def GetNodeByID(self, node_id):
        for node in self._nodes:
            if node.GetID() == node_id:
                return node
        return None

    def GetFirstNodeByName(self, name):
        for node in self._nodes:
            if node.GetName() == name:
                return node
        return None

    # test helper
    def nodes(self, class_name=None):
        return [n for n in self._nodes if class_name is None or n.IsA(class_name)]


# --- slicer.util and the Segmentations module logic ------------------------------


def arrayFromVolume(volume_node):
    return volume_node._array


def updateVolumeFromArray(volume_node, array):
    array = np.asarray(array)
    if array.ndim != 3:
        raise RuntimeError(f"Unsupported numpy array shape: {array.shape}")
    volume_node._array = np.array(array, copy=True)


class FakeSegmentationsLogic:
    def __init__(self, scene):
        self._scene = scene
        self.exports = 0
        self.imports = 0

    def ExportSegmentsToLabelmapNode(self, segmentation_node, segment_ids, labelmap_node, reference=None):
        self.exports += 1
        seg = segmentation_node.GetSegmentation()
        ids = [segment_ids.GetValue(n) for n in range(segment_ids.GetNumberOfValues())]
        grids = [(seg._segments[i][1].shape, seg._segments[i][2]) for i in ids]
        if reference is not None:
            shape, ijk = reference._array.shape, reference._ijk_to_ras
        else:
            shape, ijk = grids[0]
        for s, m in grids:
            if s != shape or not np.allclose(m, ijk):
                raise NotImplementedError("fake export: segments on another grid than the reference")
        out = np.zeros(shape, dtype=np.uint8)
        for n, segment_id in enumerate(ids):
            out[seg._segments[segment_id][1]] = n + 1
        labelmap_node._array = out
        labelmap_node._ijk_to_ras = np.array(ijk)
        labelmap_node.CreateDefaultDisplayNodes()
        table = self._scene.AddNewNodeByClass("vtkMRMLColorTableNode", labelmap_node.GetName() + "_ColorTable")
        table.SetTypeToUser()
        table.SetNumberOfColors(len(ids) + 1)
        for n, segment_id in enumerate(ids):
            segment = seg.GetSegment(segment_id)
            table.SetColor(n + 1, segment.GetName(), *segment.GetColor())
        labelmap_node.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
        return True

    def ImportLabelmapToSegmentationNode(self, labelmap_node, segmentation_node):
        self.imports += 1
        array = labelmap_node._array
        display = labelmap_node.GetDisplayNode()
        table = display.GetColorNode() if display is not None else None
        for value in sorted(int(v) for v in np.unique(array) if v != 0):
            name, color = None, [0.5, 0.5, 0.5, 1.0]
            if table is not None:
                name = table.GetColorName(value)
                table.GetColor(value, color)
            segmentation_node.GetSegmentation().add_mask(
                name or f"Label_{value}", array == value, labelmap_node._ijk_to_ras, color[:3]
            )
        return True


def make_slicer():
    """A `slicer` stand-in: .mrmlScene, .util, .modules.segmentations.logic()."""
    scene = FakeScene()
    seg_logic = FakeSegmentationsLogic(scene)
    util = SimpleNamespace(arrayFromVolume=arrayFromVolume, updateVolumeFromArray=updateVolumeFromArray)
    modules = SimpleNamespace(segmentations=SimpleNamespace(logic=lambda: seg_logic))
    return SimpleNamespace(mrmlScene=scene, util=util, modules=modules, segmentations_logic=seg_logic)


def add_volume(slicer, array, ijk_to_ras, name="volume", labelmap=False):
    """Test helper: a volume node in the fake scene (as if loaded by Slicer)."""
    node = slicer.mrmlScene.AddNewNodeByClass(
        "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name
    )
    node._array = np.array(array)
    node._ijk_to_ras = np.array(ijk_to_ras, dtype=np.float64)
    node.CreateDefaultDisplayNodes()
    return node


def add_segmentation(slicer, segments, ijk_to_ras, name="segmentation"):
    """Test helper: a segmentation node with {name: mask} segments on one grid."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    for segment_name, mask in segments.items():
        node.GetSegmentation().add_mask(segment_name, mask, ijk_to_ras)
    return node


# --- geometry helpers ------------------------------------------------------------


def oblique_ijk_to_ras(spacing=(0.7, 0.9, 2.5), origin=(12.5, -30.25, 47.0), angles=(0.3, -0.5, 0.8)):
    """An IJK-to-RAS matrix with a rotation about all three axes."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def ijk_to_ras_of(image):
    from ClaimScarLib import compute

    return compute.slicer_array_from_image(image)[1]
