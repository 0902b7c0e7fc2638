"""ClaimScar: CLAIM cardiac LGE scar synthesis and segmentation in 3D Slicer.

A scripted module over the `claim` Python package (ctypes over the claim C
library), run in Slicer's own Python process:

- SMILE: draw a scar mask (ischaemic, mid-wall, epicardial, insertion-point
  or CLAIM pattern; territory, burden, transmurality, MVO, seed) on a heart
  given as a segmentation (LV cavity, Myocardium, RV segments) or labelmap;
- Synthesis: paint LGE scar intensities into an image inside the mask's Scar
  and MVO with the CLAIM diffusion model;
- Segmentation: LV cavity, myocardium, scar and MVO with an nnU-Net model.

Long calls run on a worker thread (claim releases the GIL); a QTimer polls
their progress and the Cancel button sets the flag claim's progress
callback returns. Everything that does not need Slicer lives in
ClaimScarLib/ and is tested without Slicer (bindings/slicer/tests).
"""

import json
import logging
import os
import random
import traceback

import ctk
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from ClaimScarLib.jobs import describe_error
from ClaimScarLib import SceneLogic, SegmentationOptions, SmileOptions, SynthesisOptions, labels as L, options as O

SETTINGS_KEY = "ClaimScar"


#
# ClaimScar
#


class ClaimScar(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CLAIM Scar"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["claim project"]
        self.parent.helpText = (
            "Synthesise and segment myocardial scar in cardiac LGE MRI with CLAIM: draw SMILE scar masks on a "
            "heart segmentation (segments 'LV cavity', 'Myocardium', optional 'RV'), paint scar intensities "
            "into an image with the CLAIM diffusion model, and segment LV cavity, myocardium, scar and MVO "
            "with an nnU-Net model. Needs the 'claim' Python package in Slicer's Python "
            "(see bindings/slicer/README.md)."
        )
        self.parent.acknowledgementText = (
            "CLAIM: clinically-guided LGE augmentation for realistic and diverse myocardial scar synthesis and "
            "segmentation. Runs on the claim library (Rust, C ABI) through its ctypes Python package."
        )


#
# ClaimScarWidget
#


class ClaimScarWidget(ScriptedLoadableModuleWidget):
    """The GUI: three collapsible sections (SMILE, Synthesis, Segmentation),
    and a shared progress bar, Cancel button and log."""

    POLL_MS = 50

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = ClaimScarLogic()
        self.job = None
        self._onJobDone = None
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_MS)
        self.timer.connect("timeout()", self._poll)

        ok, detail = self.logic.claimAvailable()
        self.statusBanner = qt.QLabel()
        self.statusBanner.setWordWrap(True)
        if ok:
            self.statusBanner.setText(f"claim {detail}")
        else:
            self.statusBanner.setText(f"<b>claim is not available.</b> {detail}")
            self.statusBanner.setStyleSheet("color: #b00020")
        self.layout.addWidget(self.statusBanner)

        self._setupSmile()
        self._setupSynthesis()
        self._setupSegmentation()
        self._setupProgress()
        self.layout.addStretch(1)

        self._loadSettings()
        self.sceneCloseObserver = slicer.mrmlScene.AddObserver(slicer.mrmlScene.StartCloseEvent, self._onSceneClose)
        self.claimOk = ok
        self._setRunning(False)

    # --- small widget helpers ------------------------------------------------

    @staticmethod
    def _nodeSelector(classes, toolTip, noneText=None, childTypes=False):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = classes
        selector.selectNodeUponCreation = True
        selector.addEnabled = False
        selector.removeEnabled = False
        selector.renameEnabled = False
        selector.noneEnabled = noneText is not None
        if noneText is not None:
            selector.noneDisplay = noneText
        selector.showHidden = False
        selector.showChildNodeTypes = childTypes
        selector.setMRMLScene(slicer.mrmlScene)
        selector.setToolTip(toolTip)
        return selector

    @staticmethod
    def _spin(minimum, maximum, value, toolTip, step=1):
        box = qt.QSpinBox()
        box.setRange(minimum, maximum)
        box.setSingleStep(step)
        box.setValue(value)
        box.setToolTip(toolTip)
        return box

    @staticmethod
    def _slider(minimum, maximum, value, step, toolTip, decimals=2):
        slider = ctk.ctkSliderWidget()
        slider.decimals = decimals
        slider.minimum = minimum
        slider.maximum = maximum
        slider.singleStep = step
        slider.value = value
        slider.setToolTip(toolTip)
        return slider

    @staticmethod
    def _combo(items, toolTip):
        combo = qt.QComboBox()
        combo.addItems(list(items))
        combo.setToolTip(toolTip)
        return combo

    def _modelPathRow(self, toolTip, folders):
        """A line edit holding "builtin" or a path, with browse buttons."""
        row = qt.QHBoxLayout()
        edit = qt.QLineEdit("builtin")
        edit.setToolTip(toolTip)
        row.addWidget(edit)
        fileButton = qt.QPushButton("File...")
        fileButton.setToolTip("Choose a model file (.safetensors, .pth)")
        fileButton.connect(
            "clicked()",
            lambda: self._browse(edit, False),
        )
        row.addWidget(fileButton)
        if folders:
            folderButton = qt.QPushButton("Folder...")
            folderButton.setToolTip("Choose an nnU-Net results folder (trainer__plans__configuration)")
            folderButton.connect("clicked()", lambda: self._browse(edit, True))
            row.addWidget(folderButton)
        builtinButton = qt.QPushButton("Built-in")
        builtinButton.setToolTip("Use the small model inside the claim library")
        builtinButton.connect("clicked()", lambda: edit.setText("builtin"))
        row.addWidget(builtinButton)
        return edit, row

    @staticmethod
    def _browse(edit, folder):
        start = edit.text if os.path.exists(edit.text) else ""
        if folder:
            path = qt.QFileDialog.getExistingDirectory(None, "nnU-Net model folder", start)
        else:
            path = qt.QFileDialog.getOpenFileName(
                None, "Model file", start, "Models (*.safetensors *.pth);;All files (*)"
            )
        if path:
            edit.setText(path)

    # --- SMILE ----------------------------------------------------------------

    def _setupSmile(self):
        box = ctk.ctkCollapsibleButton()
        box.text = "SMILE scar mask"
        self.layout.addWidget(box)
        form = qt.QFormLayout(box)

        self.smileHeartSelector = self._nodeSelector(
            ["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"],
            "Heart: a segmentation with segments 'LV cavity', 'Myocardium' (and 'RV'), or a labelmap "
            "1 LV cavity, 2 myocardium, 5 RV",
        )
        form.addRow("Heart:", self.smileHeartSelector)
        self.smileReferenceSelector = self._nodeSelector(
            ["vtkMRMLScalarVolumeNode"], "Grid of the mask (usually the image to synthesise into)", "(segments' own extent)"
        )
        form.addRow("Reference volume:", self.smileReferenceSelector)

        self.patternCombo = self._combo(O.PATTERNS, "Scar pattern: ischaemic (coronary territory) or non-ischaemic")
        form.addRow("Pattern:", self.patternCombo)
        self.territoryCombo = self._combo(O.TERRITORIES, "Culprit artery (ischaemic pattern)")
        form.addRow("Territory:", self.territoryCombo)

        self.burdenSlider = self._slider(0.01, 0.6, 0.15, 0.01, "Lesion fraction of the myocardium (hit within 0.02)")
        self.burdenRandom = qt.QCheckBox("random")
        row = qt.QHBoxLayout()
        row.addWidget(self.burdenSlider)
        row.addWidget(self.burdenRandom)
        form.addRow("Burden:", row)
        self.burdenRandom.connect("toggled(bool)", lambda on: self.burdenSlider.setEnabled(not on))

        self.transmuralitySlider = self._slider(0.1, 1.0, 0.5, 0.05, "Fraction of the wall the scar crosses (ischaemic)")
        self.transmuralityRandom = qt.QCheckBox("random")
        self.transmuralityRandom.setChecked(True)
        self.transmuralitySlider.setEnabled(False)
        row = qt.QHBoxLayout()
        row.addWidget(self.transmuralitySlider)
        row.addWidget(self.transmuralityRandom)
        form.addRow("Transmurality:", row)
        self.transmuralityRandom.connect("toggled(bool)", lambda on: self.transmuralitySlider.setEnabled(not on))

        self.mvoCheck = qt.QCheckBox("add a microvascular obstruction core (ischaemic)")
        form.addRow("MVO:", self.mvoCheck)

        self.smileSeed = self._spin(0, 2**31 - 1, 0, "Same seed, same mask")
        newSeed = qt.QPushButton("New seed")
        newSeed.connect("clicked()", lambda: self.smileSeed.setValue(random.randrange(0, 2**31 - 1)))
        row = qt.QHBoxLayout()
        row.addWidget(self.smileSeed)
        row.addWidget(newSeed)
        form.addRow("Seed:", row)

        self.smileOutputSelector = self._nodeSelector(
            ["vtkMRMLSegmentationNode"], "Segmentation to write the mask into", "(create new)"
        )
        form.addRow("Output mask:", self.smileOutputSelector)

        self.drawButton = qt.QPushButton("Draw scar")
        self.drawButton.setToolTip("Draw one SMILE scar mask (fast, no network)")
        self.drawButton.connect("clicked()", self.onDraw)
        form.addRow(self.drawButton)
        self.smileInfo = qt.QLabel("")
        self.smileInfo.setWordWrap(True)
        form.addRow(self.smileInfo)

    def smileOptions(self):
        return SmileOptions(
            seed=int(self.smileSeed.value),
            pattern=self.patternCombo.currentText,
            territory=self.territoryCombo.currentText,
            burden=None if self.burdenRandom.checked else round(float(self.burdenSlider.value), 4),
            transmurality=None if self.transmuralityRandom.checked else round(float(self.transmuralitySlider.value), 4),
            mvo=bool(self.mvoCheck.checked),
        )

    def onDraw(self):
        heart = self.smileHeartSelector.currentNode()
        if heart is None:
            self._error("Select a heart segmentation or labelmap.")
            return
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            result = self.logic.core.drawScar(
                heart,
                self.smileOptions(),
                referenceVolumeNode=self.smileReferenceSelector.currentNode(),
                outputNode=self.smileOutputSelector.currentNode(),
            )
        except Exception as exc:
            slicer.app.restoreOverrideCursor()
            self._error(f"SMILE failed: {describe_error(exc)}", traceback.format_exc())
            return
        slicer.app.restoreOverrideCursor()
        info = result.info
        segments = ", ".join(str(s) for s in info.segments_chosen) or "-"
        text = f"{info.pattern}, territory {info.territory}, burden {info.burden:.3f}, AHA segments {segments}"
        if info.transmurality is not None:
            text += f", transmurality {info.transmurality:.2f}"
        self.smileInfo.setText(text)
        self._log(f"SMILE: {result.node.GetName()}: {text}")
        for note in result.notes:
            self._log(f"  {note}")
        self.smileOutputSelector.setCurrentNode(result.node)
        self.synthMaskSelector.setCurrentNode(result.node)
        self._saveSettings()

    # --- Synthesis ------------------------------------------------------------

    def _setupSynthesis(self):
        box = ctk.ctkCollapsibleButton()
        box.text = "Scar synthesis"
        self.layout.addWidget(box)
        form = qt.QFormLayout(box)

        self.synthImageSelector = self._nodeSelector(["vtkMRMLScalarVolumeNode"], "LGE (or cine) image to paint scar into")
        form.addRow("Image:", self.synthImageSelector)
        self.synthMaskSelector = self._nodeSelector(
            ["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"],
            "Mask with a 'Scar' (and 'MVO') segment, e.g. the SMILE output",
        )
        form.addRow("Scar mask:", self.synthMaskSelector)

        self.synthModelEdit, row = self._modelPathRow(
            "'builtin' (the small model inside claim) or a CLAIM/LeFusion .safetensors file", folders=False
        )
        form.addRow("Model:", row)
        self.synthDevice = self._combo(O.DEVICES, "cpu, or cuda when this claim build has CUDA")
        form.addRow("Device:", self.synthDevice)
        self.synthSeed = self._spin(0, 2**31 - 1, 0, "Same seed, same image")
        form.addRow("Seed:", self.synthSeed)

        advanced = ctk.ctkCollapsibleGroupBox()
        advanced.title = "Sampling"
        advanced.collapsed = True
        form.addRow(advanced)
        adv = qt.QFormLayout(advanced)
        self.tStart = self._spin(1, 300, 300, "Diffusion steps from noise (300 = the full schedule)")
        adv.addRow("Steps (t_start):", self.tStart)
        self.jumpLength = self._spin(1, 50, 5, "RePaint jump length")
        adv.addRow("Jump length:", self.jumpLength)
        self.jumpSamples = self._spin(1, 50, 5, "RePaint resampling per jump")
        adv.addRow("Jump samples:", self.jumpSamples)
        self.guidance = qt.QDoubleSpinBox()
        self.guidance.setRange(0.0, 20.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(1.0)
        self.guidance.setToolTip("Classifier-free guidance scale (1 = off)")
        adv.addRow("Guidance:", self.guidance)
        self.batchSize = self._spin(1, 64, 4, "Items per network batch")
        adv.addRow("Batch size:", self.batchSize)
        self.cropSize = self._spin(16, 512, 72, "In-plane window around the LV (a multiple of 8)", step=8)
        adv.addRow("Crop size:", self.cropSize)

        self.synthOutputSelector = self._nodeSelector(
            ["vtkMRMLScalarVolumeNode"], "Volume to write the synthetic image into", "(create new)"
        )
        form.addRow("Output image:", self.synthOutputSelector)
        self.synthButton = qt.QPushButton("Synthesise")
        self.synthButton.connect("clicked()", self.onSynthesize)
        form.addRow(self.synthButton)

    def synthesisOptions(self):
        return SynthesisOptions(
            model_path=self.synthModelEdit.text.strip(),
            device=self.synthDevice.currentText,
            seed=int(self.synthSeed.value),
            t_start=int(self.tStart.value),
            jump_length=int(self.jumpLength.value),
            jump_n_sample=int(self.jumpSamples.value),
            guidance_scale=float(self.guidance.value),
            batch_size=int(self.batchSize.value),
            crop_size=int(self.cropSize.value),
        )

    def onSynthesize(self):
        image, mask = self.synthImageSelector.currentNode(), self.synthMaskSelector.currentNode()
        if image is None or mask is None:
            self._error("Select an image and a scar mask.")
            return
        self._saveSettings()
        self._start(
            lambda: self.logic.core.startSynthesis(
                image, mask, self.synthesisOptions(), outputNode=self.synthOutputSelector.currentNode()
            ),
            self._showVolume,
        )

    def _showVolume(self, node):
        slicer.util.setSliceViewerLayers(background=node, fit=True)

    # --- Segmentation ---------------------------------------------------------

    def _setupSegmentation(self):
        box = ctk.ctkCollapsibleButton()
        box.text = "Segmentation (nnU-Net)"
        self.layout.addWidget(box)
        form = qt.QFormLayout(box)

        self.segImageSelector = self._nodeSelector(["vtkMRMLScalarVolumeNode"], "LGE image to segment")
        form.addRow("Image:", self.segImageSelector)
        self.segModelEdit, row = self._modelPathRow(
            "'builtin', an nnU-Net v2 results folder (trainer__plans__configuration), a checkpoint_final.pth "
            "or a claim safetensors bundle",
            folders=True,
        )
        form.addRow("Model:", row)
        self.foldsEdit = qt.QLineEdit()
        self.foldsEdit.setPlaceholderText("every fold present (or e.g. 0,1,2 / all)")
        self.foldsEdit.setToolTip("Folds to ensemble; 'all' is nnU-Net's fold_all")
        form.addRow("Folds:", self.foldsEdit)
        self.configurationEdit = self._configurationEdit()
        form.addRow("Configuration:", self.configurationEdit)
        self.segDevice = self._combo(O.DEVICES, "cpu, or cuda when this claim build has CUDA")
        form.addRow("Device:", self.segDevice)
        self.stepSize = self._slider(0.1, 1.0, 0.5, 0.05, "Sliding-window step, fraction of the patch (nnU-Net: 0.5)")
        form.addRow("Step size:", self.stepSize)
        self.mirroringCheck = qt.QCheckBox("test-time mirroring (slower, usually a little better)")
        self.mirroringCheck.setChecked(True)
        form.addRow("Mirroring:", self.mirroringCheck)
        self.postprocessCheck = qt.QCheckBox("scar and MVO only where they touch the myocardium")
        self.postprocessCheck.setChecked(True)
        form.addRow("Post-process:", self.postprocessCheck)

        self.segOutputSelector = self._nodeSelector(
            ["vtkMRMLSegmentationNode"], "Segmentation to write the result into", "(create new)"
        )
        form.addRow("Output segmentation:", self.segOutputSelector)
        self.segButton = qt.QPushButton("Segment")
        self.segButton.connect("clicked()", self.onSegment)
        form.addRow(self.segButton)

    @staticmethod
    def _configurationEdit():
        edit = qt.QLineEdit()
        edit.setPlaceholderText("the trained one (e.g. 2d, 3d_fullres)")
        return edit

    def segmentationOptions(self):
        return SegmentationOptions(
            model_path=self.segModelEdit.text.strip(),
            folds=self.foldsEdit.text.strip(),
            configuration=self.configurationEdit.text.strip(),
            device=self.segDevice.currentText,
            step_size=round(float(self.stepSize.value), 4),
            mirroring=bool(self.mirroringCheck.checked),
            postprocess=bool(self.postprocessCheck.checked),
        )

    def onSegment(self):
        image = self.segImageSelector.currentNode()
        if image is None:
            self._error("Select an image to segment.")
            return
        self._saveSettings()
        self._start(
            lambda: self.logic.core.startSegmentation(
                image, self.segmentationOptions(), outputNode=self.segOutputSelector.currentNode()
            ),
            lambda node: self.segOutputSelector.setCurrentNode(node),
        )

    # --- progress, cancel, log ------------------------------------------------

    def _setupProgress(self):
        box = ctk.ctkCollapsibleButton()
        box.text = "Progress"
        self.layout.addWidget(box)
        layout = qt.QVBoxLayout(box)
        row = qt.QHBoxLayout()
        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(0)
        row.addWidget(self.progressBar)
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.setToolTip("Stop the running synthesis or segmentation (within one network evaluation)")
        self.cancelButton.connect("clicked()", self.onCancel)
        row.addWidget(self.cancelButton)
        layout.addLayout(row)
        self.statusLabel = qt.QLabel("Idle")
        layout.addWidget(self.statusLabel)
        self.logView = qt.QPlainTextEdit()
        self.logView.setReadOnly(True)
        self.logView.setMaximumHeight(140)
        layout.addWidget(self.logView)

    def _log(self, text):
        logging.info(text)
        self.logView.appendPlainText(text)

    def _error(self, text, details=""):
        self._log(text)
        if details:
            slicer.util.errorDisplay(text, detailedText=details)
        else:
            slicer.util.errorDisplay(text)

    def _setRunning(self, running):
        self.cancelButton.setEnabled(running)
        for button in (self.drawButton, self.synthButton, self.segButton):
            button.setEnabled(self.claimOk and not running)

    def _start(self, makeJob, onDone):
        if self.job is not None and self.job.running:
            self._error("A job is already running.")
            return
        try:
            job = makeJob()
        except Exception as exc:
            self._error(f"Cannot start: {describe_error(exc)}")
            return
        self.job, self._onJobDone = job, onDone
        self.progressBar.setRange(0, 0)  # busy until the first report
        self.statusLabel.setText(f"{job.name}: starting")
        self._log(f"{job.name} started")
        self._setRunning(True)
        self.timer.start()

    def _poll(self):
        job = self.job
        if job is None:
            self.timer.stop()
            return
        update = job.poll()
        if update.progress is not None:
            done, total = update.progress
            self.progressBar.setRange(0, max(total, 1))
            self.progressBar.setValue(done)
            self.statusLabel.setText(f"{job.name}: {done}/{total} network evaluations")
        if not update.finished:
            return
        self.timer.stop()
        self.job = None
        self._setRunning(False)
        outcome = update.outcome
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(1 if outcome.ok else 0)
        self.statusLabel.setText(f"{outcome.message} ({outcome.seconds:.1f} s)")
        if outcome.status == "done":
            self._log(f"{outcome.message}: {outcome.result.GetName()} ({outcome.seconds:.1f} s)")
            if self._onJobDone is not None:
                self._onJobDone(outcome.result)
        elif outcome.status == "cancelled":
            self._log(outcome.message)
        else:
            self._error(outcome.message, outcome.details)

    def onCancel(self):
        if self.job is not None:
            self.job.cancel()
            self.statusLabel.setText(f"{self.job.name}: cancelling")

    def _onSceneClose(self, caller=None, event=None):
        """Nodes are about to go: stop the job and drop its result."""
        if self.job is not None:
            # Never poll here: a finished job would create its nodes in the closing scene.
            self.job.cancel()
            self.job.wait(30)
            self.job = None
            self.timer.stop()
            self._setRunning(False)

    # --- settings -------------------------------------------------------------

    def _saveSettings(self):
        settings = qt.QSettings()
        settings.setValue(f"{SETTINGS_KEY}/smile", json.dumps(self.smileOptions().to_dict()))
        settings.setValue(f"{SETTINGS_KEY}/synthesis", json.dumps(self.synthesisOptions().to_dict()))
        settings.setValue(f"{SETTINGS_KEY}/segmentation", json.dumps(self.segmentationOptions().to_dict()))

    def _loadSettings(self):
        settings = qt.QSettings()

        def read(name, cls):
            try:
                return cls.from_dict(json.loads(settings.value(f"{SETTINGS_KEY}/{name}", "") or "{}"))
            except (TypeError, ValueError):
                return cls()

        smile = read("smile", SmileOptions)
        self.patternCombo.setCurrentText(smile.pattern)
        self.territoryCombo.setCurrentText(smile.territory)
        self.burdenRandom.setChecked(smile.burden is None)
        if smile.burden is not None:
            self.burdenSlider.value = smile.burden
        self.transmuralityRandom.setChecked(smile.transmurality is None)
        if smile.transmurality is not None:
            self.transmuralitySlider.value = smile.transmurality
        self.mvoCheck.setChecked(smile.mvo)
        self.smileSeed.setValue(smile.seed)

        synth = read("synthesis", SynthesisOptions)
        self.synthModelEdit.setText(synth.model_path)
        self.synthDevice.setCurrentText(synth.device)
        self.synthSeed.setValue(synth.seed)
        self.tStart.setValue(synth.t_start)
        self.jumpLength.setValue(synth.jump_length)
        self.jumpSamples.setValue(synth.jump_n_sample)
        self.guidance.setValue(synth.guidance_scale)
        self.batchSize.setValue(synth.batch_size)
        self.cropSize.setValue(synth.crop_size)

        seg = read("segmentation", SegmentationOptions)
        self.segModelEdit.setText(seg.model_path)
        self.foldsEdit.setText(seg.folds)
        self.configurationEdit.setText(seg.configuration)
        self.segDevice.setCurrentText(seg.device)
        self.stepSize.value = seg.step_size
        self.mirroringCheck.setChecked(seg.mirroring)
        self.postprocessCheck.setChecked(seg.postprocess)

    def cleanup(self):
        self._onSceneClose()
        self.timer.stop()
        slicer.mrmlScene.RemoveObserver(self.sceneCloseObserver)
        self.logic.core.models.clear()

    def enter(self):
        pass

    def exit(self):
        pass


#
# ClaimScarLogic
#


class ClaimScarLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic class; the work is done by ClaimScarLib.SceneLogic
    (`self.core`), which takes the slicer, vtk and claim modules."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.core = SceneLogic(slicer=slicer, vtk=vtk)

    def claimAvailable(self):
        return self.core.claimAvailable()

    # Thin synchronous wrappers for scripting from the Python console.

    def drawScar(self, heartNode, referenceVolumeNode=None, **smileOptions):
        """SMILE mask into a new segmentation node; returns ScarResult."""
        return self.core.drawScar(heartNode, SmileOptions(**smileOptions), referenceVolumeNode=referenceVolumeNode)

    def synthesize(self, imageNode, maskNode, **synthesisOptions):
        """Blocking synthesis; returns the new volume node (raises on error)."""
        return self._wait(self.core.startSynthesis(imageNode, maskNode, SynthesisOptions(**synthesisOptions)))

    def segment(self, imageNode, **segmentationOptions):
        """Blocking segmentation; returns the new segmentation node."""
        return self._wait(self.core.startSegmentation(imageNode, SegmentationOptions(**segmentationOptions)))

    @staticmethod
    def _wait(job):
        def keepGuiAlive(*_):
            slicer.app.processEvents()

        outcome = job.run_to_end(keepGuiAlive, interval=0.02)
        if not outcome.ok:
            raise RuntimeError(outcome.message + ("\n" + outcome.details if outcome.details else ""))
        return outcome.result


#
# ClaimScarTest
#


class ClaimScarTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test): the same conversions as the
    pytest suite, against real MRML nodes."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_geometry_round_trip()
        self.setUp()
        self.test_labels_round_trip()
        self.setUp()
        self.test_smile_and_segmentation()

    @staticmethod
    def _heart():
        return L.toy_heart((12, 64, 64))

    def test_geometry_round_trip(self):
        import numpy as np

        self.delayDisplay("Geometry round trip")
        core = ClaimScarLogic().core
        m = np.array(
            [[0.6, -0.3, 0.5, 10.0], [0.2, 0.8, -0.9, -20.0], [-0.4, 0.1, 2.2, 30.0], [0, 0, 0, 1]], dtype=float
        )
        node = slicer.util.addVolumeFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), ijkToRAS=m)
        image = core.volumeToImage(node)
        for ijk in [(0, 0, 0), (5, 4, 3), (1, 2, 3)]:
            ras = m @ np.append(ijk, 1.0)
            lps = image.index_to_physical(ijk)
            self.assertTrue(np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-6))
        back = core.imageToVolume(image, "back")
        self.assertTrue(np.allclose(slicer.util.arrayFromVTKMatrix(self._ijkToRas(back)), m, atol=1e-9))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(back), slicer.util.arrayFromVolume(node)))
        self.delayDisplay("Geometry round trip passed")

    @staticmethod
    def _ijkToRas(node):
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return matrix

    def test_labels_round_trip(self):
        import numpy as np

        self.delayDisplay("Label map <-> segmentation")
        core = ClaimScarLogic().core
        labels = self._heart()
        labels[2:5, 20:24, 18:22] = L.SCAR
        ref = slicer.util.addVolumeFromArray(np.zeros(labels.shape, np.int16), ijkToRAS=np.diag([1.4, 1.4, 8.0, 1.0]))
        image = core.volumeToImage(ref)
        claim = core.claim
        node = core.labelsToSegmentation(claim.Image.like(image, labels), "heart", referenceVolumeNode=ref)
        segmentation = node.GetSegmentation()
        names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, ["LV cavity", "Myocardium", "Scar", "RV"])
        again, notes = core.labelsFromNode(node, ref)
        self.assertEqual(notes, [])
        self.assertTrue(np.array_equal(again.array, labels))
        self.delayDisplay("Label map <-> segmentation passed")

    def test_smile_and_segmentation(self):
        import numpy as np

        self.delayDisplay("SMILE and segmentation")
        logic = ClaimScarLogic()
        labels = self._heart()
        ref = slicer.util.addVolumeFromArray(
            np.zeros(labels.shape, np.int16), ijkToRAS=np.diag([-1.5, -1.5, 8.0, 1.0]), name="reference"
        )
        heart = logic.core.labelsToSegmentation(
            logic.core.claim.Image.like(logic.core.volumeToImage(ref), labels), "heart", referenceVolumeNode=ref
        )
        result = logic.drawScar(heart, referenceVolumeNode=ref, seed=1, burden=0.2)
        mask, _ = logic.core.labelsFromNode(result.node, ref)
        self.assertTrue(abs(L.burden(mask.array) - 0.2) <= 0.02)
        wall = labels == L.MYO
        lesion = np.isin(mask.array, [L.SCAR, L.MVO])
        self.assertFalse(np.any(lesion & ~wall))
        intensity = np.where(labels == L.LV, 300, np.where(labels == L.MYO, 60, 20)).astype(np.int16)
        slicer.util.updateVolumeFromArray(ref, intensity)
        seg = logic.segment(ref, mirroring=False, step_size=1.0)
        self.assertIsNotNone(seg)
        self.delayDisplay("SMILE and segmentation passed")

