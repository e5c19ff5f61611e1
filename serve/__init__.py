"""Using a trained model on new radiographs: `bonify-predict` (predict), Grad-CAM (gradcam).

Reads only a model file and its card (`bonify.model_card`) and turns source images into model
inputs with the one image path of the project (`bonify.images`), so a served model sees the
pixels it was trained on.
"""
