"""Analysis of one image: run the bundles for its modality, return everything a viewer/report needs."""
