"""ClaimScar's logic: Slicer nodes in, claim calls, Slicer nodes out.

`SceneLogic` touches Slicer only through the objects it is given: a
`slicer`-like module (``util.arrayFromVolume``, ``util.updateVolumeFromArray``,
``mrmlScene``, ``modules.segmentations.logic()``) and a `vtk`-like module
(``vtkMatrix4x4``, ``vtkStringArray``), plus the `claim` package. In Slicer
they are the real modules (imported on first use); the tests pass small
fakes. Everything here except the jobs' compute functions runs on the GUI
thread; compute functions see only numpy arrays and claim.Images.
"""

from dataclasses import dataclass, field
from typing import Any, List

import numpy as np

from . import compute, geometry, labels as L
from .jobs import Job

__all__ = ["ClaimUnavailable", "SceneLogic", "ScarResult", "INSTALL_HINT"]

INSTALL_HINT = (
    "The 'claim' Python package is not installed in Slicer's Python. In Slicer's Python console run "
    "slicer.util.pip_install('/path/to/claim/bindings/python') (needs cargo), or pip install a claim wheel "
    "with Slicer's python, then restart Slicer."
)

SEGMENTATION_CLASS = "vtkMRMLSegmentationNode"
LABELMAP_CLASS = "vtkMRMLLabelMapVolumeNode"
SCALAR_CLASS = "vtkMRMLScalarVolumeNode"
COLOR_TABLE_CLASS = "vtkMRMLColorTableNode"
COLOR_TABLE_NAME = "ClaimScar labels"
TEMP_EXPORT_NAME = "ClaimScar temporary export"
TEMP_IMPORT_NAME = "ClaimScar temporary import"


class ClaimUnavailable(RuntimeError):
    """The claim package cannot be imported."""


@dataclass
class ScarResult:
    """A SMILE draw: the segmentation node, claim.SmileInfo and notes (e.g.
    segments that were ignored because their names are not known)."""

    node: Any
    info: Any
    notes: List[str] = field(default_factory=list)


class SceneLogic:
    """Conversions between Slicer nodes and claim.Images, and the three
    operations (SMILE scar drawing, synthesis, segmentation).

    slicer, vtk, claim: the modules to use; None imports the real ones
    when first needed.
    """

    def __init__(self, slicer=None, vtk=None, claim=None):
        self._slicer = slicer
        self._vtk = vtk
        self._claim = claim
        self.models = compute.ModelCache()

    # --- modules -----------------------------------------------------------

    @property
    def slicer(self):
        if self._slicer is None:
            import slicer

            self._slicer = slicer
        return self._slicer

    @property
    def vtk(self):
        if self._vtk is None:
            import vtk

            self._vtk = vtk
        return self._vtk

    @property
    def claim(self):
        if self._claim is None:
            try:
                import claim
            except ImportError as exc:
                raise ClaimUnavailable(f"{INSTALL_HINT} ({exc})") from exc
            self._claim = claim
        return self._claim

    def claimAvailable(self):
        """(True, version) or (False, why) without raising."""
        try:
            claim = self.claim
            return True, claim.version()
        except Exception as exc:  # the package may be present but its library broken
            return False, str(exc)

    @property
    def scene(self):
        return self.slicer.mrmlScene

    # --- volumes -----------------------------------------------------------

    def ijkToRas(self, volumeNode):
        """The node's IJK-to-RAS matrix as a 4x4 numpy array."""
        matrix = self.vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return geometry.matrix_to_array(matrix)

    def volumeToImage(self, volumeNode):
        """A claim.Image (voxels copied, LPS geometry) of a scalar or
        labelmap volume node. Parent transforms are not applied."""
        if volumeNode is None:
            raise ValueError("no volume selected")
        array = self.slicer.util.arrayFromVolume(volumeNode)
        if array is None or np.ndim(array) != 3:
            raise ValueError(f"{volumeNode.GetName()}: not a 3-D scalar volume")
        return compute.image_from_slicer_array(self.claim, array, self.ijkToRas(volumeNode))

    def imageToVolume(self, image, name, node=None, labelmap=False, like=None):
        """Writes a claim.Image into `node` (None: a new scalar or labelmap
        volume node named `name`). `like`: a volume whose parent transform
        the node gets. Returns the node."""
        if node is None:
            node = self.scene.AddNewNodeByClass(LABELMAP_CLASS if labelmap else SCALAR_CLASS, name)
        array, ijk_to_ras = compute.slicer_array_from_image(image)
        self.slicer.util.updateVolumeFromArray(node, array)
        node.SetIJKToRASMatrix(geometry.array_to_matrix(ijk_to_ras, self.vtk.vtkMatrix4x4()))
        if like is not None:
            node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
        node.CreateDefaultDisplayNodes()
        return node

    def _removeNode(self, node):
        """Removes a node and its display nodes from the scene."""
        if node is None:
            return
        displays = [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
        self.scene.RemoveNode(node)
        for display in displays:
            if display is not None and self.scene.IsNodePresent(display):
                self.scene.RemoveNode(display)

    # --- label maps and segmentations ---------------------------------------

    def colorTable(self):
        """The module's colour table node (created once): names and colours
        of LV cavity, Myocardium, Scar, MVO, RV at their label values."""
        node = self.scene.GetFirstNodeByName(COLOR_TABLE_NAME)
        if node is None or not node.IsA(COLOR_TABLE_CLASS):
            node = self.scene.AddNewNodeByClass(COLOR_TABLE_CLASS, COLOR_TABLE_NAME)
            node.SetTypeToUser()
            node.SetNumberOfColors(max(L.BY_VALUE) + 1)
            node.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
            for info in L.LABELS:
                node.SetColor(info.value, info.name, *info.color, 1.0)
            node.NamesInitialisedOn()
        return node

    def labelsFromNode(self, node, referenceVolumeNode=None):
        """The label map (claim.Image, uint8, module scheme) of a segmentation
        or labelmap volume node, and notes for the user.

        A segmentation is exported through a temporary labelmap node (on the
        reference volume's grid when one is given, else the segments'
        extent) and its segments mapped to values by name. A labelmap volume
        is taken as it is and must already use the scheme (1 LV cavity,
        2 myocardium, 3 scar, 4 MVO, 5 RV) and, with a reference, its grid.
        """
        if node is None:
            raise ValueError("no label map or segmentation selected")
        if node.IsA(SEGMENTATION_CLASS):
            return self.segmentationToLabels(node, referenceVolumeNode)
        image = self.volumeToImage(node)
        values = np.unique(image.array)
        outside = [int(v) for v in values if v < 0 or v > max(L.BY_VALUE)]
        if outside:
            raise ValueError(
                f"{node.GetName()}: label values {outside} are outside the scheme "
                "(0 background, 1 LV cavity, 2 myocardium, 3 scar, 4 MVO, 5 RV)"
            )
        if referenceVolumeNode is not None:
            reference = self.volumeToImage(referenceVolumeNode)
            if not reference.same_geometry(image, 1e-4):
                raise ValueError(
                    f"{node.GetName()} and {referenceVolumeNode.GetName()} have different grids: "
                    "convert the labelmap to a segmentation to resample it"
                )
        array = image.array.astype(np.uint8)
        return self.claim.Image(array, image.spacing, image.origin, image.direction), []

    def segmentationToLabels(self, segmentationNode, referenceVolumeNode=None):
        """See labelsFromNode."""
        segmentation = segmentationNode.GetSegmentation()
        ids = self.vtk.vtkStringArray()
        segmentation.GetSegmentIDs(ids)
        ids_list = [ids.GetValue(n) for n in range(ids.GetNumberOfValues())]
        if not ids_list:
            raise ValueError(f"{segmentationNode.GetName()}: the segmentation has no segments")
        names = [segmentation.GetSegment(i).GetName() for i in ids_list]
        labelmap = self.scene.AddNewNodeByClass(LABELMAP_CLASS, TEMP_EXPORT_NAME)
        try:
            ok = self.slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmap, referenceVolumeNode
            )
            if not ok:
                raise RuntimeError(f"{segmentationNode.GetName()}: exporting the segments to a label map failed")
            exported = self.volumeToImage(labelmap)
        finally:
            display = labelmap.GetDisplayNode()
            colors = display.GetColorNode() if display is not None else None
            self._removeNode(labelmap)
            # The export made a colour table named after the temporary node.
            if colors is not None and colors.GetName() == TEMP_EXPORT_NAME + "_ColorTable":
                self.scene.RemoveNode(colors)
        array, unknown = L.merge_exported(exported.array, names)
        notes = [f"segment '{name}' ignored (not one of {', '.join(i.name for i in L.LABELS)})" for name in unknown]
        return self.claim.Image(array, exported.spacing, exported.origin, exported.direction), notes

    def labelsToSegmentation(self, labels, name, segmentationNode=None, referenceVolumeNode=None):
        """Writes a label map (claim.Image, module scheme) into a segmentation
        node (None: a new one named `name`; else its segments are replaced):
        one segment per value present, named and coloured from the module's
        colour table, through a temporary labelmap node. Returns the node."""
        colors = self.colorTable()
        labelmap = self.imageToVolume(labels, TEMP_IMPORT_NAME, labelmap=True, like=referenceVolumeNode)
        try:
            labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
            if segmentationNode is None:
                segmentationNode = self.scene.AddNewNodeByClass(SEGMENTATION_CLASS, name)
                segmentationNode.CreateDefaultDisplayNodes()
            else:
                segmentationNode.GetSegmentation().RemoveAllSegments()
            if referenceVolumeNode is not None:
                segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
                segmentationNode.SetAndObserveTransformNodeID(referenceVolumeNode.GetTransformNodeID())
            ok = self.slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentationNode)
            if not ok:
                raise RuntimeError(f"{name}: importing the label map into the segmentation failed")
        finally:
            self._removeNode(labelmap)
        return segmentationNode

    # --- operations --------------------------------------------------------

    def drawScar(self, labelsNode, options, referenceVolumeNode=None, outputNode=None, outputName=None):
        """One SMILE scar mask (claim.smile_draw) on the heart of `labelsNode`
        (segmentation or labelmap), written to a segmentation with segments
        LV cavity, Myocardium, Scar (and MVO, RV). Fast (no network): runs
        on the calling thread. Returns a ScarResult."""
        labels, notes = self.labelsFromNode(labelsNode, referenceVolumeNode)
        mask, info = compute.draw_scar(self.claim, labels, options)
        name = outputName or f"{labelsNode.GetName()} SMILE {options.pattern} seed {options.seed}"
        node = self.labelsToSegmentation(mask, name, outputNode, referenceVolumeNode)
        return ScarResult(node, info, notes)

    def startSynthesis(self, imageNode, labelsNode, options, outputNode=None, outputName=None):
        """Starts a synthesis on a worker thread and returns its Job; the
        job's result is the output scalar volume node (created when it
        finishes, by Job.poll on the GUI thread). Raises ValueError at once
        for bad inputs or options."""
        problems = options.problems()
        if problems:
            raise ValueError("; ".join(problems))
        claim = self.claim
        image = self.volumeToImage(imageNode)
        labels, _notes = self.labelsFromNode(labelsNode, imageNode)
        compute._lesion_check(labels.array)
        name = outputName or f"{imageNode.GetName()} synthetic seed {options.seed}"
        models = self.models

        def run(progress):
            return compute.synthesize(claim, models, image, labels, options, progress)

        def publish(result):
            node = self.imageToVolume(result, name, outputNode, like=imageNode)
            self._copyWindowLevel(imageNode, node)
            return node

        return Job(run, publish, "Synthesis").start()

    def startSegmentation(self, imageNode, options, outputNode=None, outputName=None):
        """Starts an nnU-Net segmentation on a worker thread and returns its
        Job; its result is the segmentation node (LV cavity, Myocardium,
        Scar, MVO, RV segments) on the image's grid."""
        problems = options.problems()
        if problems:
            raise ValueError("; ".join(problems))
        claim = self.claim
        image = self.volumeToImage(imageNode)
        name = outputName or f"{imageNode.GetName()} segmentation"
        models = self.models

        def run(progress):
            return compute.segment(claim, models, image, options, progress)

        def publish(result):
            return self.labelsToSegmentation(result, name, outputNode, imageNode)

        return Job(run, publish, "Segmentation").start()

    def _copyWindowLevel(self, source, target):
        """Same window/level as the source volume (best effort)."""
        try:
            src, dst = source.GetDisplayNode(), target.GetDisplayNode()
            if src is None or dst is None:
                return
            dst.SetAutoWindowLevel(False)
            dst.SetWindowLevel(src.GetWindow(), src.GetLevel())
        except AttributeError:
            pass
