//! AHA 17-segment parcellation of the LV myocardium.
